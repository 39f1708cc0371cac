import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads and durably updates the `HighWaterMark` file.
///
/// Why two checksummed slots updated in place rather than temp + rename per
/// update: the mark is rewritten after every commit that grows the largest
/// id, and in `fsync` mode a temp file's fsync, the rename and the
/// directory's fsync cost two journal commits of the file system each time —
/// half the throughput of one-submission commits. Here an update is one
/// `pwrite` of a 512-byte slot (its own sector) and one `fdatasync` of a file
/// whose size never changes; slots alternate and carry a sequence number and
/// a checksum, so a torn write leaves the other slot — the previous mark,
/// behind, never ahead — and the reader takes the valid slot with the highest
/// sequence. The file is created (and replaced when unreadable) by temp +
/// fsync + rename + directory fsync. With `sync` off (durability `none`) the
/// mark is only as durable as the journal, which is not fsynced either.
/// A mutex, because in `batch` mode the syncer's queue writes it.
final class HighWaterMarkFile: Sendable {
    let path: String
    private let sync: Bool
    private let state: Mutex<State>

    static let slotSize = 512

    private struct State {
        /// The mark last written or read, and its slot sequence.
        var mark: HighWaterMark?
        var seq: UInt64 = 0
        var fd: Int32 = -1
    }

    init(path: String, sync: Bool) {
        self.path = path
        self.sync = sync
        state = Mutex(State())
    }

    deinit {
        state.withLock { if $0.fd >= 0 { close($0.fd) } }
    }

    /// The mark last written or read.
    var current: HighWaterMark? { state.withLock { $0.mark } }

    /// nil when there is no mark yet. Throws `JournalError(.corrupt)` for a
    /// file with no valid slot: the broker must not guess.
    func read() throws -> HighWaterMark? {
        let fm = FileManager.default
        guard fm.fileExists(atPath: path) else { return nil }
        guard let data = fm.contents(atPath: path) else {
            throw JournalError(.unwritable, path: path, detail: "cannot read the high-water mark")
        }
        let bytes = [UInt8](data)
        let slots = stride(from: 0, to: bytes.count, by: Self.slotSize).compactMap {
            Self.decodeSlot(bytes[$0..<min(bytes.count, $0 + Self.slotSize)])
        }
        guard let best = slots.max(by: { $0.seq < $1.seq }) else {
            throw JournalError(.corrupt, path: path, detail: "the high-water mark is unreadable; start with --accept-journal-loss to write a new one")
        }
        state.withLock {
            $0.mark = best.mark
            $0.seq = best.seq
        }
        return best.mark
    }

    /// Records `mark` durably; a no-op when it would not change.
    func write(_ mark: HighWaterMark) throws {
        try state.withLock { s in
            if s.mark == mark { return }
            let seq = s.seq &+ 1
            let slot = Self.encodeSlot(mark, seq: seq)
            if s.fd < 0 { s.fd = open(path, O_RDWR | O_CLOEXEC) }
            var st = stat()
            // In place only once this process knows the file's sequence (it read or made it).
            if s.seq > 0 && s.fd >= 0 && fstat(s.fd, &st) == 0 && Int(st.st_size) == 2 * Self.slotSize {
                try overwrite(s.fd, slot, at: off_t(Int(seq % 2) * Self.slotSize))
            } else {
                if s.fd >= 0 { close(s.fd) }
                s.fd = -1
                try create(slot, seq: seq)
                s.fd = open(path, O_RDWR | O_CLOEXEC)
            }
            s.mark = mark
            s.seq = seq
        }
    }

    private func overwrite(_ fd: Int32, _ slot: [UInt8], at offset: off_t) throws {
        let n = slot.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) }
        guard n == slot.count else { throw failure("writing a slot") }
        if sync {
            #if canImport(Glibc)
            guard fdatasync(fd) == 0 else { throw failure("syncing") }
            #else
            guard fsync(fd) == 0 else { throw failure("syncing") }
            #endif
        }
    }

    /// A new file holding `slot` in its place and an empty other slot.
    private func create(_ slot: [UInt8], seq: UInt64) throws {
        var bytes = [UInt8](repeating: 0, count: 2 * Self.slotSize)
        let at = Int(seq % 2) * Self.slotSize
        bytes.replaceSubrange(at..<(at + Self.slotSize), with: slot)
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("creating \(tmp)") }
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        let ok = n == bytes.count && (!sync || fsync(fd) == 0)
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

    // MARK: Slots

    /// The mark's text, its sequence, and a checksum of both, NUL-padded to a slot.
    static func encodeSlot(_ mark: HighWaterMark, seq: UInt64) -> [UInt8] {
        let body = Array((mark.text + "seq \(seq)\n").utf8)
        var out = body + Array("check \(String(fnv1a(body), radix: 16))\n".utf8)
        out += [UInt8](repeating: 0, count: max(0, slotSize - out.count))
        return out
    }

    static func decodeSlot(_ bytes: ArraySlice<UInt8>) -> (seq: UInt64, mark: HighWaterMark)? {
        let used = bytes.prefix { $0 != 0 }
        guard let text = String(validating: used, as: UTF8.self), text.hasSuffix("\n") else { return nil }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        guard let check = lines.popLast(), check.hasPrefix("check "),
              let sum = UInt64(check.dropFirst(6), radix: 16),
              let seqLine = lines.popLast(), seqLine.hasPrefix("seq "), let seq = UInt64(seqLine.dropFirst(4)) else { return nil }
        let markText = lines.map { $0 + "\n" }.joined()
        guard fnv1a(Array((markText + seqLine + "\n").utf8)) == sum, let mark = HighWaterMark(text: markText) else { return nil }
        return (seq, mark)
    }

    /// FNV-1a, 64 bits: enough to tell a torn or stray slot from a written one.
    static func fnv1a(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }

    private func failure(_ doing: String) -> JournalError {
        JournalError(.unwritable, path: path, detail: "writing the high-water mark: \(doing): \(String(cString: strerror(errno)))")
    }
}
