import Foundation
import XCTest

/// `Sources/conveyor/Settings.swift` is the one registry `conveyor config`
/// reports: every environment variable the sources read must be in it, and
/// everything in it must be read somewhere (checked on the source text).
final class SettingsRegistryTests: XCTestCase {
    /// Set by the worker for its handlers, not a setting of ours.
    static let notSettings: Set<String> = ["CONVEYOR_PROGRESS_FD"]

    func testEveryVariableTheSourcesReadIsRegisteredAndViceVersa() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let sources = root.appendingPathComponent("Sources")
        let registryFile = sources.appendingPathComponent("conveyor/Settings.swift")
        let registryText = try String(contentsOf: registryFile, encoding: .utf8)
        let registered = Set(matches(#"Setting\("([A-Z][A-Z0-9_]+)""#, in: registryText))
        XCTAssertGreaterThan(registered.count, 30)

        var read: Set<String> = []
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)?.compactMap { $0 as? URL } ?? []
        for f in files where f.pathExtension == "swift" && f.path != registryFile.path {
            let text = try String(contentsOf: f, encoding: .utf8)
            read.formUnion(matches(#""((?:CONVEYOR|ANALYSIS)_[A-Z0-9_]+|MAX_CONCURRENT_ANALYSIS_TASKS)""#, in: text))
        }
        read.subtract(Self.notSettings)
        XCTAssertEqual(read.subtracting(registered).sorted(), [], "read by the sources but missing from Settings.swift")
        XCTAssertEqual(registered.subtracting(read).sorted(), [], "in Settings.swift but read nowhere")
    }

    func matches(_ pattern: String, in text: String) -> [String] {
        guard let re = try? NSRegularExpression(pattern: pattern) else { return [] }
        return re.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap {
            Range($0.range(at: 1), in: text).map { String(text[$0]) }
        }
    }
}
