/// Shares one STATS round trip among the `GET /api/queue/stats` requests that
/// arrive while another is in flight.
///
/// Why: dashboards poll this route, and STATS costs the broker far more than a
/// submission, so one broker request per HTTP request would let readers slow
/// down the queue. Freshness is kept: a request never gets a snapshot requested
/// before it arrived — requests arriving during a fetch wait for the *next*
/// fetch, which starts as soon as the current one ends and serves all of them.
/// A submission acknowledged before a stats request is therefore always visible
/// in its answer.
actor StatsCoalescer {
    typealias Fetch = @Sendable () async throws -> [UInt8]

    private let fetch: Fetch
    private var inFlight = false
    private var waiting: [CheckedContinuation<[UInt8], any Error>] = []

    init(fetch: @escaping Fetch) {
        self.fetch = fetch
    }

    /// A stats snapshot taken after this call began.
    func stats() async throws -> [UInt8] {
        try await withCheckedThrowingContinuation { c in
            waiting.append(c)
            if !inFlight { startNext() }
        }
    }

    private func startNext() {
        inFlight = true
        let batch = waiting
        waiting = []
        let fetch = self.fetch
        Task {
            let result: Result<[UInt8], any Error>
            do { result = .success(try await fetch()) } catch { result = .failure(error) }
            self.finished(batch, result)
        }
    }

    private func finished(_ batch: [CheckedContinuation<[UInt8], any Error>], _ result: Result<[UInt8], any Error>) {
        for c in batch { c.resume(with: result) }
        inFlight = false
        if !waiting.isEmpty { startNext() }
    }
}
