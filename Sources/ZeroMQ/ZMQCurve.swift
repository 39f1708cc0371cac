import CZeroMQ

/// libzmq's CURVE primitives, wrapped so that no module but this one touches
/// the C API: key pairs, Z85 text, and whether this libzmq was built with it.
public enum ZMQCurve {
    /// True when libzmq was built with CURVE (Debian's libzmq5 is).
    public static var isAvailable: Bool { zmq_has("curve") == 1 }

    /// A new key pair as Z85 text (40 characters each).
    public static func keyPair() throws(ZMQError) -> (publicKey: String, secretKey: String) {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw .last("zmq_curve_keypair") }
        return (string(pub), string(sec))
    }

    /// The public key of a Z85 secret key.
    public static func publicKey(ofSecret secret: String) throws(ZMQError) -> String {
        var pub = [CChar](repeating: 0, count: 41)
        guard secret.utf8.count == 40, zmq_curve_public(&pub, secret) == 0 else {
            throw ZMQError(errno: EINVAL, operation: "zmq_curve_public")
        }
        return string(pub)
    }

    /// Z85 text → bytes; nil unless the text is valid Z85 of a multiple of 5 characters.
    public static func z85Decode(_ text: String) -> [UInt8]? {
        let n = text.utf8.count
        guard n > 0, n % 5 == 0 else { return nil }
        var out = [UInt8](repeating: 0, count: n / 5 * 4)
        guard zmq_z85_decode(&out, text) != nil else { return nil }
        return out
    }

    /// Bytes (a multiple of 4) → Z85 text.
    public static func z85Encode(_ bytes: [UInt8]) -> String? {
        guard !bytes.isEmpty, bytes.count % 4 == 0 else { return nil }
        var out = [CChar](repeating: 0, count: bytes.count / 4 * 5 + 1)
        guard zmq_z85_encode(&out, bytes, bytes.count) != nil else { return nil }
        return string(out)
    }

    private static func string(_ c: [CChar]) -> String {
        String(decoding: c.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
