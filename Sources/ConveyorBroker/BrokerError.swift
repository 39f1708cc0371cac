/// A broker that cannot start or had to stop, said in one line for the
/// operator, with the exit status the CLI should end with.
public struct BrokerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public let exitCode: Int32
    public init(_ message: String, exitCode: Int32 = 1) {
        description = message
        self.exitCode = exitCode
    }

    /// Another broker took the shared journal over (EX_TEMPFAIL): a
    /// supervisor restarts this one, and it comes back as the standby.
    public static let deposedExitCode: Int32 = 75
}
