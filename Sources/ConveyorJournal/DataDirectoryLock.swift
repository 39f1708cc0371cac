#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One broker per data directory, held with `flock` on the directory itself.
///
/// Why not SQLite's `locking_mode=EXCLUSIVE` (what the journal used before):
/// it locks every other connection out of the file, so `conveyor journal
/// backup` could not take a consistent online copy with SQLite's backup API
/// and `conveyor journal check` could not read a live journal. In WAL mode
/// readers never block the writer, so the only thing exclusive locking still
/// gave — a second broker refused at start — is this lock's job now. The
/// lock goes with the process (also on `kill -9`), so it never goes stale.
final class DataDirectoryLock {
    private var fd: Int32

    /// - Throws: `JournalError(.locked)` when another process holds it.
    init(directory: String, journal: String) throws {
        fd = open(directory, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw JournalError(.unwritable, path: journal, detail: "cannot open \(directory): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let e = errno
            close(fd)
            fd = -1
            if e == EWOULDBLOCK {
                throw JournalError(.locked, path: journal, detail: "another process holds the data directory \(directory)")
            }
            throw JournalError(.unwritable, path: journal, detail: "cannot lock \(directory): \(String(cString: strerror(e)))")
        }
    }

    func release() {
        guard fd >= 0 else { return }
        close(fd) // drops the flock
        fd = -1
    }

    deinit { release() }
}
