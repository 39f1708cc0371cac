import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads and atomically replaces the `HighWaterMark` file.
///
/// Why temp + fsync + rename + directory fsync: a crash mid-write must leave
/// either the old mark or the new one, never a torn file that would stop the
/// broker. With `sync` off (durability `none`) the mark is only as durable as
/// the journal, which is not fsynced either. A mutex, because in `batch` mode
/// the syncer's queue writes it while the loop thread may read `written`.
final class HighWaterMarkFile: Sendable {
    let path: String
    private let sync: Bool
    /// The largest mark written (or read at start), so an unchanged mark is not rewritten.
    private let state: Mutex<HighWaterMark?>

    init(path: String, sync: Bool) {
        self.path = path
        self.sync = sync
        state = Mutex(nil)
    }

    /// The mark last written or read.
    var current: HighWaterMark? { state.withLock { $0 } }

    /// nil when there is no mark yet. Throws `JournalError(.corrupt)` for a
    /// file that is not a mark: the broker must not guess.
    func read() throws -> HighWaterMark? {
        let fm = FileManager.default
        guard fm.fileExists(atPath: path) else { return nil }
        guard let data = fm.contents(atPath: path) else {
            throw JournalError(.unwritable, path: path, detail: "cannot read the high-water mark")
        }
        guard let mark = HighWaterMark(text: String(decoding: data, as: UTF8.self)) else {
            throw JournalError(.corrupt, path: path, detail: "the high-water mark is unreadable; start with --accept-journal-loss to write a new one")
        }
        state.withLock { $0 = mark }
        return mark
    }

    /// Replaces the mark; a no-op when it would not change.
    func write(_ mark: HighWaterMark) throws {
        try state.withLock { current in
            if current == mark { return }
            try replace(with: mark)
            current = mark
        }
    }

    private func replace(with mark: HighWaterMark) throws {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("creating \(tmp)") }
        let bytes = Array(mark.text.utf8)
        var ok = bytes.withUnsafeBytes { buf -> Bool in
            guard let base = buf.baseAddress else { return true }
            var off = 0
            while off < buf.count {
                let n = posixWrite(fd, base + off, buf.count - off)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                off += n
            }
            return true
        }
        if ok && sync { ok = fsync(fd) == 0 }
        let err = errno
        close(fd)
        guard ok else {
            errno = err
            let e = failure("writing \(tmp)")
            unlink(tmp)
            throw e
        }
        guard rename(tmp, path) == 0 else {
            let e = failure("renaming \(tmp)")
            unlink(tmp)
            throw e
        }
        if sync {
            // The rename itself must survive a power cut.
            let dir = (path as NSString).deletingLastPathComponent
            let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_CLOEXEC)
            guard dfd >= 0 else { throw failure("opening \(dir)") }
            defer { close(dfd) }
            guard fsync(dfd) == 0 else { throw failure("syncing \(dir)") }
        }
    }

    private func failure(_ doing: String) -> JournalError {
        JournalError(.unwritable, path: path, detail: "writing the high-water mark: \(doing): \(String(cString: strerror(errno)))")
    }
}

/// `write(2)`, named apart from `HighWaterMarkFile.write(_:)`.
private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    #if canImport(Glibc)
    Glibc.write(fd, p, n)
    #else
    Darwin.write(fd, p, n)
    #endif
}
