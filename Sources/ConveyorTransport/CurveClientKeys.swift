import ZeroMQ

/// What a connecting program (worker, CLI, gateway) needs for CURVE: its own
/// pair (`--curve-key NAME.key_secret`) and the server's public key
/// (`--curve-server-key broker.key`). Loaded once, validated with a message
/// naming the file.
public struct CurveClientKeys: Sendable, Equatable {
    public let own: CurveCertificate
    public let serverPublicKey: String

    public init(own: CurveCertificate, serverPublicKey: String) {
        self.own = own
        self.serverPublicKey = serverPublicKey
    }

    public static func load(keyFile: String, serverKeyFile: String) throws(KeyFileError) -> CurveClientKeys {
        let own = try CurveCertificate.load(keyFile, requireSecret: true)
        let server = try CurveCertificate.load(serverKeyFile)
        return CurveClientKeys(own: own, serverPublicKey: server.publicKey)
    }

    public var security: SocketProfile.Security {
        .curveClient(publicKey: own.publicKey, secretKey: own.secretKey ?? "", serverKey: serverPublicKey)
    }
}
