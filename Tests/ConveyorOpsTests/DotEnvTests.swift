import ConveyorOps
import XCTest

/// The `.env` parser: what operators write in files, and the one-line errors for what they get wrong.
final class DotEnvTests: XCTestCase {
    func pairs(_ text: String) throws -> [String] {
        try DotEnv.parse(text, file: "t.env").get().map { "\($0.key)=\($0.value)" }
    }

    func error(_ text: String) -> DotEnv.ParseError? {
        if case .failure(let e) = DotEnv.parse(text, file: "conf/app.env") { return e }
        return nil
    }

    func testGoodLinesCommentsAndBlanks() throws {
        let text = "# settings for this host\n\nMAX_CONCURRENT_ANALYSIS_TASKS=8\nexport CONVEYOR_LOG_LEVEL=debug\n"
            + "  CONVEYOR_DATA_DIR = /var/lib/conveyor  \nEMPTY=\nURL=http://example.com/a#frag   # a trailing comment\n"
            + "\tTABBED=1\r\n   # indented comment\nlower_case_9=x=y\n"
        XCTAssertEqual(try pairs(text), [
            "MAX_CONCURRENT_ANALYSIS_TASKS=8", "CONVEYOR_LOG_LEVEL=debug", "CONVEYOR_DATA_DIR=/var/lib/conveyor",
            "EMPTY=", "URL=http://example.com/a#frag", "TABBED=1", "lower_case_9=x=y",
        ])
        XCTAssertEqual(try DotEnv.parse("A=1\n\nB=2", file: "f").get().map(\.line), [1, 3])
    }

    func testQuotes() throws {
        let text = #"""
        SINGLE='a "literal" $HOME \n'
        DOUBLE="two words # not a comment"
        ESCAPES="line1\nline2\t\"q\" \\ \$X"
        QUOTED_HASH='#fff'   # comment after a quote
        EMPTY_Q=""
        """#
        XCTAssertEqual(try DotEnv.parse(text, file: "f").get().map(\.value), [
            #"a "literal" $HOME \n"#, "two words # not a comment", "line1\nline2\t\"q\" \\ $X", "#fff", "",
        ])
    }

    func testMalformedLinesNameFileAndLine() {
        XCTAssertEqual(error("A=1\nJUST_A_WORD\n"), DotEnv.ParseError(file: "conf/app.env", line: 2, reason: "expected KEY=VALUE"))
        XCTAssertEqual(error("\n\n9LIVES=1")?.line, 3)
        XCTAssertEqual(error("BAD-NAME=1")?.reason.contains("not a variable name"), true)
        XCTAssertEqual(error("A='open")?.reason, "unterminated single quote")
        XCTAssertEqual(error("A=\"open")?.reason, "unterminated double quote")
        XCTAssertEqual(error("A=\"x\" trailing")?.reason, "text after the closing quote")
        XCTAssertEqual(error("A=it's")?.reason, "quotes must surround the whole value")
        XCTAssertEqual(error("=value")?.line, 1)
        XCTAssertEqual(error("X=1\nexport\n")?.description, "conf/app.env:2: expected KEY=VALUE")
    }
}
