import ConveyorJournalPostgres
import Foundation
import XCTest

/// `--journal postgres://…`: what is accepted, what is refused (a password
/// above all), and where the password comes from instead.
final class PostgresURLTests: XCTestCase {
    func testParsesWhatTheIssueNames() throws {
        let u = try PostgresURL(parsing: "postgres://conveyor@db1:5433/queue")
        XCTAssertEqual(u, PostgresURL(user: "conveyor", host: "db1", port: 5433, database: "queue"))
        XCTAssertEqual(u.description, "postgres://conveyor@db1:5433/queue")
        let d = try PostgresURL(parsing: "postgresql://c@127.0.0.1/q?schema=tenant_1")
        XCTAssertEqual(d.port, 5432)
        XCTAssertEqual(d.schema, "tenant_1")
        XCTAssertEqual(d.sslMode, .prefer, "libpq's default: encrypted when the server offers it")
        let v = try PostgresURL(parsing: "postgres://c@db1/q?sslmode=verify-full&sslrootcert=/etc/conveyor/db-ca.pem")
        XCTAssertEqual(v.sslMode, .verifyFull)
        XCTAssertEqual(v.sslRootCert, "/etc/conveyor/db-ca.pem")
        XCTAssertEqual(v.description, "postgres://c@db1:5432/q?sslmode=verify-full&sslrootcert=/etc/conveyor/db-ca.pem")
        XCTAssertEqual(try PostgresURL(parsing: "postgres://c@db1/q?sslmode=disable").sslMode, .disable)
    }

    func testRefusesWithAMessageThatSaysWhy() {
        let cases: [(String, String)] = [
            ("postgres://conveyor:secret@db/q", "password"),
            ("mysql://u@h/d", "not a PostgreSQL URL"),
            ("postgres://@h/d", "no user"),
            ("postgres://u@h/", "no database"),
            ("postgres://u@h:70000/d", "port"),
            ("postgres://u@h/d?sslmode=sometimes", "sslmode"),
            ("postgres://u@h/d?sslrootcert=/ca.pem", "verify-full"),
            ("postgres://u@h/d?schema=a&schema=b", "twice"),
            ("postgres://u@h/d?application_name=x", "unknown journal URL parameter"),
            ("postgres://u@h/d?schema=1bad", "schema"),
            ("postgres://u@h/d?schema=a;drop", "schema"),
        ]
        for (text, why) in cases {
            XCTAssertThrowsError(try PostgresURL(parsing: text), text) { e in
                XCTAssertTrue("\(e)".contains(why), "\(text): \(e)")
            }
        }
    }

    func testPasswordFromTheEnvironmentOrAPrivatePgpass() throws {
        let u = PostgresURL(user: "conveyor", host: "db1", port: 5432, database: "q")
        XCTAssertEqual(u.password(environment: ["PGPASSWORD": "env-pw"]), "env-pw")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pgpass-\(getpid())-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("pgpass").path
        try """
            # comment
            other:5432:q:conveyor:wrong
            db1:*:q:conveyor:pa\\:ss
            *:*:*:*:fallback
            """.write(toFile: file, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file)
        XCTAssertEqual(u.password(environment: ["PGPASSFILE": file]), "pa:ss", "first matching line, \\: unescaped")
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file)
        XCTAssertNil(u.password(environment: ["PGPASSFILE": file]), "readable by others: ignored, as libpq does")
        XCTAssertNil(u.password(environment: [:]))
    }
}
