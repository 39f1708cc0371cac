import Foundation

/// The dashboard served at `GET /`: one self-contained HTML file (inline CSS and
/// JS, no CDN) from the module's resource bundle, read once at start-up.
///
/// Why not `Bundle.module` directly: its generated accessor calls fatalError
/// when the bundle is missing (a binary copied without its
/// `conveyor_ConveyorGateway.resources` directory). A gateway without its
/// dashboard should still serve the API, so the page is looked up by path and
/// a short explanatory page stands in when it cannot be found.
enum DashboardPage {
    static let bundleName = "conveyor_ConveyorGateway.resources"

    static func load() -> [UInt8] {
        for url in candidates() {
            if let data = FileManager.default.contents(atPath: url.path) { return Array(data) }
        }
        return Array("""
        <!doctype html><html><head><meta charset="utf-8"><title>Conveyor</title></head>
        <body><h1>Conveyor gateway</h1><p>The dashboard file was not found: install the
        <code>\(bundleName)</code> directory next to the <code>conveyor</code> binary.
        The API is available under <code>/api</code>.</p></body></html>
        """.utf8)
    }

    static func candidates() -> [URL] {
        var dirs: [URL] = []
        if let env = ProcessInfo.processInfo.environment["CONVEYOR_RESOURCES"], !env.isEmpty {
            dirs.append(URL(fileURLWithPath: env))
        }
        dirs.append(Bundle.main.bundleURL.appendingPathComponent(bundleName))
        let exe = URL(fileURLWithPath: CommandLine.arguments.first ?? "").deletingLastPathComponent()
        dirs.append(exe.appendingPathComponent(bundleName))
        for b in Bundle.allBundles { dirs.append(b.bundleURL.deletingLastPathComponent().appendingPathComponent(bundleName)) }
        var urls = dirs.map { $0.appendingPathComponent("Resources/dashboard.html") }
        // A source checkout (swift run from the package directory).
        urls.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Resources/dashboard.html"))
        return urls
    }
}
