/// Why: operators keep settings in a `.env` file next to the service (the
/// same file systemd's EnvironmentFile and `set -a; . file` read). Parsing
/// is pure — text in, ordered pairs or a located error out — so every rule
/// is unit-tested without touching the process environment.
///
/// Accepted, one per line: `KEY=VALUE` (spaces around `=` allowed), optionally prefixed `export `; blank
/// lines and lines starting with `#`; values bare (trailing ` # comment`
/// stripped, surrounding spaces trimmed), in single quotes (literal) or in
/// double quotes (`\n`, `\t`, `\"`, `\\`, `\$` escapes). Anything else is an
/// error naming the file and line.
public enum DotEnv {
    public struct Entry: Sendable, Equatable {
        public let key: String
        public let value: String
        public let line: Int
        public init(key: String, value: String, line: Int) { self.key = key; self.value = value; self.line = line }
    }

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public let file: String
        public let line: Int
        public let reason: String
        public init(file: String, line: Int, reason: String) { self.file = file; self.line = line; self.reason = reason }
        public var description: String { "\(file):\(line): \(reason)" }
    }

    /// Parses `text` (the contents of `file`, used in error messages only).
    public static func parse(_ text: String, file: String) -> Result<[Entry], ParseError> {
        var entries: [Entry] = []
        var lineNumber = 0
        // "\r\n" is one Character in Swift, so both line ends are named.
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            var line = Substring(raw)
            if line.last == "\r" { line = line.dropLast() }
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            if trimmed.isEmpty || trimmed.first == "#" { continue }
            switch parseLine(trimmed) {
            case .success(let (k, v)): entries.append(Entry(key: k, value: v, line: lineNumber))
            case .failure(let reason): return .failure(ParseError(file: file, line: lineNumber, reason: reason.text))
            }
        }
        return .success(entries)
    }

    struct Reason: Error { let text: String }

    private static func parseLine(_ input: Substring) -> Result<(String, String), Reason> {
        var line = input
        if line.hasPrefix("export ") || line.hasPrefix("export\t") {
            line = line.dropFirst(7).drop(while: { $0 == " " || $0 == "\t" })
        }
        guard let eq = line.firstIndex(of: "=") else {
            return .failure(Reason(text: "expected KEY=VALUE"))
        }
        var keyText = line[..<eq]
        while let last = keyText.last, last == " " || last == "\t" { keyText = keyText.dropLast() }
        let key = String(keyText)
        guard isValidKey(key) else {
            return .failure(Reason(text: "'\(key)' is not a variable name (letters, digits, _; not starting with a digit)"))
        }
        let rest = line[line.index(after: eq)...].drop(while: { $0 == " " || $0 == "\t" })
        switch rest.first {
        case "'":
            let body = rest.dropFirst()
            guard let close = body.firstIndex(of: "'") else { return .failure(Reason(text: "unterminated single quote")) }
            guard isOnlyComment(body[body.index(after: close)...]) else { return .failure(Reason(text: "text after the closing quote")) }
            return .success((key, String(body[..<close])))
        case "\"":
            var value = ""
            var i = rest.index(after: rest.startIndex)
            while i < rest.endIndex {
                let c = rest[i]
                if c == "\"" {
                    guard isOnlyComment(rest[rest.index(after: i)...]) else { return .failure(Reason(text: "text after the closing quote")) }
                    return .success((key, value))
                }
                if c == "\\" {
                    let n = rest.index(after: i)
                    guard n < rest.endIndex else { break }
                    switch rest[n] {
                    case "n": value.append("\n")
                    case "t": value.append("\t")
                    case "r": value.append("\r")
                    case "\"", "\\", "$", "`": value.append(rest[n])
                    default: value.append("\\"); value.append(rest[n])
                    }
                    i = rest.index(after: n)
                    continue
                }
                value.append(c)
                i = rest.index(after: i)
            }
            return .failure(Reason(text: "unterminated double quote"))
        default:
            var value = rest
            // A ` #` starts a comment in a bare value; a `#` inside a word (a URL fragment) does not.
            if let hash = commentStart(value) { value = value[..<hash] }
            value = value.drop(while: { $0 == " " || $0 == "\t" })
            while let last = value.last, last == " " || last == "\t" { value = value.dropLast() }
            if value.contains(where: { $0 == "\"" || $0 == "'" }) {
                return .failure(Reason(text: "quotes must surround the whole value"))
            }
            return .success((key, String(value)))
        }
    }

    private static func commentStart(_ s: Substring) -> Substring.Index? {
        var previous: Character = " "
        var i = s.startIndex
        while i < s.endIndex {
            if s[i] == "#" && (previous == " " || previous == "\t") && i != s.startIndex { return i }
            if s[i] == "#" && i == s.startIndex { return i }
            previous = s[i]
            i = s.index(after: i)
        }
        return nil
    }

    private static func isOnlyComment(_ s: Substring) -> Bool {
        let t = s.drop(while: { $0 == " " || $0 == "\t" })
        return t.isEmpty || t.first == "#"
    }

    public static func isValidKey(_ k: String) -> Bool {
        guard let first = k.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return k.unicodeScalars.allSatisfy { ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }
}
