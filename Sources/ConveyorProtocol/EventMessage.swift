/// One message of the event stream (§7.1): exactly two frames, a non-empty
/// topic and a JSON object. The JSON is not parsed here; subscribers that
/// need its members parse it themselves and ignore those they do not know.
public struct EventMessage: Equatable, Sendable {
    public let topic: String
    public let json: [UInt8]

    public init(topic: String, json: [UInt8]) {
        self.topic = topic
        self.json = json
    }

    public func encode() -> [[UInt8]] { [Array(topic.utf8), json] }

    public static func decode(_ frames: [[UInt8]]) throws(ProtocolError) -> EventMessage {
        guard frames.count == 2 else { throw .bad("an event has 2 frames (topic, json), got \(frames.count)") }
        guard !frames[0].isEmpty else { throw .bad("event topic is empty") }
        return EventMessage(topic: Frames.string(frames[0]), json: frames[1])
    }
}
