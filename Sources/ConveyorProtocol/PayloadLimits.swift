import ConveyorCore

/// The size limits of a task payload and of the message that carries it.
///
/// Why here: the broker enforces them (its `--max-payload` and the ZeroMQ
/// `ZMQ_MAXMSGSIZE` of its ROUTER sockets) and the gateway must check the same
/// figures *before* it sends — a message over `ZMQ_MAXMSGSIZE` is not refused,
/// libzmq drops the whole connection, and the gateway's connection is shared
/// by every HTTP caller. One definition keeps the two sides from drifting.
public enum PayloadLimits {
    /// The broker's `--max-payload` default (`CONVEYOR_MAX_PAYLOAD_BYTES`): 10 MiB.
    public static let defaultMaxPayloadBytes = SchedulerConfig.defaultMaxPayloadBytes
    /// The largest `--max-payload` either side accepts: 256 MiB.
    public static let maxConfigurablePayloadBytes = 256 * 1024 * 1024
    /// Room for the frames around the payload (type, ids, options); the broker
    /// sets `ZMQ_MAXMSGSIZE` to the payload limit plus this.
    public static let envelopeBytes = 64 * 1024

    /// The largest message (any one frame) the broker's sockets accept.
    public static func maxMessageBytes(maxPayloadBytes: Int) -> Int {
        maxPayloadBytes.addingReportingOverflow(envelopeBytes).overflow ? Int.max : maxPayloadBytes + envelopeBytes
    }
}
