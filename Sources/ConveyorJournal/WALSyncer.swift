import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `batch` durability's clock: every `intervalMs`, if anything was committed
/// since the last round, fsyncs the journal's write-ahead log.
///
/// Why a separate file descriptor on its own queue: with `synchronous=NORMAL`
/// SQLite writes the WAL without syncing it, and `fsync` flushes a file (an
/// inode), whichever descriptor asks. Syncing from here never takes the
/// database connection away from the broker's loop, so commits do not wait
/// for the disk; a machine crash can lose at most the last interval.
///
/// It also keeps the `HighWaterMark` in this mode: the mark may only claim
/// what is on disk, so it is written after the fsync that made the ids it
/// names durable (never ahead of the journal, even after a power cut).
/// `@unchecked Sendable`: `timer` is set once in `init` and only cancelled in
/// `deinit`; everything that changes is in `written` (atomic) or `state` (mutex).
final class WALSyncer: @unchecked Sendable {
    private let walPath: String
    private let queue = DispatchQueue(label: "conveyor.journal.wal-sync")
    private let timer: any DispatchSourceTimer
    /// Commits so far; the timer syncs when it moved since its last round.
    private let written = Atomic<UInt64>(0)
    /// The largest task id in a commit counted by `written`.
    private let committedLastID = Atomic<UInt64>(0)
    private let mark: HighWaterMarkFile?
    private let generation: Int64
    private let state = Mutex(State())

    private struct State {
        var fd: Int32 = -1
        var synced: UInt64 = 0
        var failures = 0
    }

    init(walPath: String, intervalMs: Int, mark: HighWaterMarkFile? = nil, generation: Int64 = 0) {
        self.walPath = walPath
        self.mark = mark
        self.generation = generation
        let interval = max(1, intervalMs)
        timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + .milliseconds(interval), repeating: .milliseconds(interval), leeway: .milliseconds(interval / 10))
        timer.setEventHandler { [weak self] in self?.syncIfNeeded() }
        timer.resume()
    }

    deinit {
        timer.cancel()
        state.withLock { s in
            if s.fd >= 0 {
                _ = fsync(s.fd)
                close(s.fd)
            }
        }
    }

    /// Called after each commit (from the broker's thread), with the largest
    /// task id committed so far. The id is stored first: whoever sees the new
    /// count sees an id whose commit was written before it.
    func noteCommit(lastID: UInt64 = 0) {
        committedLastID.store(lastID, ordering: .releasing)
        written.add(1, ordering: .releasing)
    }

    /// Syncs now if anything was written since the last sync (also used on
    /// close), then moves the mark up to what that sync made durable.
    func syncIfNeeded() {
        let target = written.load(ordering: .acquiring)
        let lastID = committedLastID.load(ordering: .acquiring)
        state.withLock { s in
            let markBehind = mark != nil && lastID > (mark?.current?.lastID ?? 0)
            guard target != s.synced || markBehind else { return }
            // Synced even when only the mark is behind: its id may be from a
            // commit newer than `target`, which this fsync then covers.
            if s.fd < 0 { s.fd = open(walPath, O_RDONLY | O_CLOEXEC) }
            // No WAL yet (nothing written) or a transient failure: try again next round.
            guard s.fd >= 0, fsync(s.fd) == 0 else {
                s.failures += 1
                return
            }
            s.synced = target
            if markBehind, let mark {
                // A failure (disk full) is retried next round; the mark stays behind, never ahead.
                do { try mark.write(HighWaterMark(generation: generation, lastID: lastID)) } catch { s.failures += 1 }
            }
        }
    }

    /// Rounds whose fsync failed (for tests and diagnostics).
    var failures: Int { state.withLock { $0.failures } }
}
