import XCTest
@testable import ConveyorCore
#if canImport(Glibc)
import Glibc
#endif

/// A million queued tasks must fit in memory (TaskRecord is packed for it).
final class MemoryTests: XCTestCase {
    func testAMillionQueuedTasksCostUnder300BytesEach() throws {
        #if !canImport(Glibc)
        throw XCTSkip("measured with glibc's mallinfo2 and /proc/self/statm")
        #else
        let n = 1_000_000
        var config = SchedulerConfig()
        config.maxQueue = n
        let client = PeerID(Array("client-connection".utf8))
        let types = ["pdf", "render.page", "img:v2", "mail_send"]
        var buffer: [SchedulerOutput] = []
        buffer.reserveCapacity(2048)

        let heapBefore = heapBytes()
        let rssBefore = residentBytes()
        var s = Scheduler(config: config, now: t0)
        for i in 0..<n {
            // A distinct small payload per task, as real submissions have.
            let payload = Array("{\"doc\":\(i)}".utf8)
            let spec = TaskSpec(type: types[i & 3], priority: Priority(rawValue: UInt8(i % 4))!, payload: payload)
            guard case .success = s.submit(spec, from: client, now: t0 + Int64(i)) else { return XCTFail("rejected at \(i)") }
            // The broker drains the outputs every loop iteration.
            if i & 1023 == 0 { s.drainOutput(into: &buffer) }
        }
        s.drainOutput(into: &buffer)
        buffer.removeAll(keepingCapacity: true)
        let heapAfter = heapBytes()
        let rssAfter = residentBytes()

        XCTAssertEqual(s.queueSize, n)
        XCTAssertEqual(s.queueSize(.urgent), n / 4)
        let rssPerTask = Double(rssAfter - rssBefore) / Double(n)
        var heapPerTask: Double?
        if let a = heapAfter, let b = heapBefore { heapPerTask = Double(a - b) / Double(n) }
        func fmt(_ v: Double?) -> String { v.map { String(Double(Int($0 * 10)) / 10) } ?? "n/a" }
        print("memory: \(fmt(heapPerTask)) bytes/task allocated (mallinfo2), \(fmt(rssPerTask)) bytes/task resident "
              + "(statm delta); TaskRecord stride \(MemoryLayout<TaskRecord>.stride)")
        // The allocator's own count where available, else the resident-set delta.
        let perTask = heapPerTask ?? rssPerTask
        XCTAssertGreaterThan(perTask, 16, "the measurement must see the tasks")
        XCTAssertLessThan(perTask, 300)
        XCTAssertLessThan(MemoryLayout<TaskRecord>.stride, 100, "keep the record packed")
        withExtendedLifetime(s) {}
        #endif
    }

    #if canImport(Glibc)
    /// Bytes allocated through malloc, including large mmapped blocks, from
    /// glibc's `mallinfo2` (Swift's Glibc module does not import malloc.h, so it
    /// is looked up at run time). nil where it cannot be called safely.
    private func heapBytes() -> Int? {
        #if arch(x86_64)
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallinfo2") else { return nil }
        // struct mallinfo2 is ten size_t fields, returned in memory: on x86-64
        // System V the caller passes the result's address as the first argument.
        typealias MallInfo2 = @convention(c) (UnsafeMutablePointer<Int>) -> UnsafeMutableRawPointer?
        let call = unsafeBitCast(sym, to: MallInfo2.self)
        var fields = [Int](repeating: 0, count: 10)
        _ = fields.withUnsafeMutableBufferPointer { call($0.baseAddress!) }
        return fields[7] + fields[4] // uordblks (in use) + hblkhd (mmapped)
        #else
        return nil
        #endif
    }

    private func residentBytes() -> Int {
        guard let f = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(f) }
        var size = 0, resident = 0
        guard fscanf_statm(f, &size, &resident) else { return 0 }
        return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    private func fscanf_statm(_ f: UnsafeMutablePointer<FILE>, _ size: inout Int, _ resident: inout Int) -> Bool {
        var line = [CChar](repeating: 0, count: 256)
        guard fgets(&line, Int32(line.count), f) != nil else { return false }
        let fields = String(decoding: line.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .split(separator: " ")
        guard fields.count >= 2, let a = Int(fields[0]), let b = Int(fields[1]) else { return false }
        size = a
        resident = b
        return true
    }
    #endif
}
