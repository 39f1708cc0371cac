import ConveyorCore
import ConveyorProtocol
import Foundation
import Synchronization
import ConveyorTransport
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// One message of the broker's event stream (proto §7): a topic and a JSON object.
public struct BrokerEvent: Sendable, Equatable {
    public let topic: [UInt8]
    public let json: [UInt8]

    public init(topic: [UInt8], json: [UInt8]) {
        self.topic = topic
        self.json = json
    }

    public var topicString: String { String(decoding: topic, as: UTF8.self) }

    public func hasTopicPrefix(_ prefix: [UInt8]) -> Bool { topic.starts(with: prefix) }

    /// The `task_id` member of a task event, found by scanning the bytes: the
    /// event thread routes every task event by id, so this must not build a
    /// JSON tree. nil when absent or not a task id.
    public var taskID: TaskID? {
        let key = Array("\"task_id\"".utf8)
        let j = json
        guard j.count > key.count + 18 else { return nil }
        var i = 0
        let last = j.count - key.count
        while i <= last {
            if j[i] == key[0], Array(j[i..<(i + key.count)]) == key {
                var k = i + key.count
                while k < j.count, j[k] == UInt8(ascii: " ") || j[k] == UInt8(ascii: ":") { k += 1 }
                guard k < j.count, j[k] == UInt8(ascii: "\""), k + 17 < j.count, j[k + 17] == UInt8(ascii: "\"") else { return nil }
                return TaskID(bytes: Array(j[(k + 1)...(k + 16)]))
            }
            i += 1
        }
        return nil
    }
}

/// What a subscriber to one task receives.
public enum TaskUpdate: Sendable, Equatable {
    /// A `task.*` event for this task from the event stream (progress, started, succeeded…).
    case event(BrokerEvent)
    /// FINISHED sent to this client's connection because it submitted the task (proto §5.9).
    case finished(state: String, body: [UInt8])
}

/// The broker client for servers: one background thread owns a small fixed set of
/// DEALER sockets (plus the event SUB socket and an optional XPUB republisher),
/// and any number of Swift tasks share them.
///
/// Why: HTTP handlers run concurrently on many threads, but a ZeroMQ socket may
/// only be touched by one thread, and a socket per request would cost a TCP
/// handshake and a broker-side identity each time. Requests are handed to the
/// socket thread through a `Mailbox`, multiplexed by request id, and answered by
/// resuming a `CheckedContinuation`. `ZMQ_IMMEDIATE` makes a send fail at once
/// while the broker is unreachable, so callers can answer "unavailable" instead
/// of queueing work that would be delivered minutes later; libzmq reconnects by
/// itself and the next request goes through.
public final class AsyncBrokerClient: Sendable {
    public struct Configuration: Sendable {
        /// The broker's client endpoint: the first of `endpoints`.
        public var endpoint: String {
            get { endpoints[0] }
            set { endpoints = [newValue] }
        }
        /// Every broker to try (an active and its standbys, spec §9.7): requests
        /// follow `not_leader` and move on after `failoverAfterMs` of silence.
        public var endpoints: [String]
        /// The broker's event (XPUB) endpoint, or several comma-separated
        /// (every broker's: only the active one publishes); nil: no event subscription.
        public var eventsEndpoint: String?
        /// Where to republish the event stream (XPUB, bound here); nil: not at all.
        public var eventsOutEndpoint: String?
        /// Topic prefixes subscribed on the broker's event stream.
        public var topics: [String] = ["task.", "stats", "worker."]
        /// DEALER sockets to spread requests over (1 is plenty on loopback).
        public var sockets: Int = 1
        /// Default reply timeout.
        public var timeoutMs: Int = 5000
        /// Largest inbound frame accepted (per proto §11).
        public var maxMessageSize: Int64 = 64 * 1024 * 1024
        /// CURVE for the connection to the broker and the event subscription.
        public var security: SocketProfile.Security = .none
        /// CURVE for the republisher (a server: its context needs a running `ZAPHandler`).
        public var eventsOutSecurity: SocketProfile.Security = .none

        public init(endpoint: String, eventsEndpoint: String? = nil, eventsOutEndpoint: String? = nil) {
            self.init(endpoints: [endpoint], eventsEndpoint: eventsEndpoint, eventsOutEndpoint: eventsOutEndpoint)
        }

        public init(endpoints: [String], eventsEndpoint: String? = nil, eventsOutEndpoint: String? = nil) {
            self.endpoints = endpoints.isEmpty ? ["tcp://127.0.0.1:5555"] : endpoints
            self.eventsEndpoint = eventsEndpoint
            self.eventsOutEndpoint = eventsOutEndpoint
        }
    }

    public let configuration: Configuration
    /// The endpoint the republisher actually bound (a `*` port resolved), if any.
    public let eventsOutBound: String?

    private let mailbox = Mailbox<Command>()
    private let counter = Atomic<UInt64>(0)
    private let registry = SubscriberRegistry()
    private let stopped = DispatchSemaphore(value: 0)
    private let stopRequested = Atomic<Bool>(false)

    enum Command: Sendable {
        case call(id: UInt64, frames: [[UInt8]], timeoutMs: Int, continuation: CheckedContinuation<ClientReply, any Error>)
        case abandon(id: UInt64)
        case stop
    }

    /// Opens the sockets on a new thread and returns once they are set up.
    /// Throws if the republishing endpoint cannot be bound or an endpoint is invalid.
    public init(context: ZMQContext, configuration: Configuration) throws {
        self.configuration = configuration
        let ready = DispatchSemaphore(value: 0)
        let setup = SetupResult()
        let mailbox = self.mailbox
        let registry = self.registry
        let stopped = self.stopped
        let thread = Thread {
            let loop: EventLoop
            do throws(ZMQError) {
                loop = try EventLoop(context: context, configuration: configuration, mailbox: mailbox, registry: registry)
            } catch {
                setup.value.withLock { $0 = .failure(error) }
                ready.signal()
                stopped.signal()
                return
            }
            setup.value.withLock { $0 = .success(loop.xpubBound) }
            ready.signal()
            loop.run()
            stopped.signal()
        }
        thread.name = "conveyor-broker-client"
        thread.start()
        ready.wait()
        switch setup.value.withLock({ $0 }) {
        case .success(let bound): eventsOutBound = bound
        case .failure(let e): throw ClientError.transport(e)
        case nil: throw ClientError.notConnected(endpoint: configuration.endpoint)
        }
    }

    deinit {
        if !stopRequested.load(ordering: .relaxed) { mailbox.post(.stop) }
    }

    /// Stops the socket thread: pending calls fail, subscriptions end. Idempotent.
    public func shutdown() {
        guard !stopRequested.exchange(true, ordering: .relaxed) else { return }
        mailbox.post(.stop)
        stopped.wait()
        registry.finishAll()
    }

    /// Sends one request and waits for its reply.
    ///
    /// - Throws: `ClientError.notConnected` at once when no connection to the broker
    ///   exists (or its queue is full), `ClientError.timeout` after `timeoutMs`,
    ///   `CancellationError` if the calling task is cancelled.
    public func call(timeoutMs: Int? = nil, _ make: ([UInt8]) -> ClientRequest) async throws -> ClientReply {
        let id = counter.add(1, ordering: .relaxed).newValue
        // With several brokers every submission carries a key: a resend never doubles a task.
        let frames = BrokerEndpoints(configuration.endpoints).keyed(make(Self.requestID(id))).encode()
        let timeout = timeoutMs ?? configuration.timeoutMs
        let mailbox = self.mailbox
        if stopRequested.load(ordering: .relaxed) { throw ClientError.transport(ZMQError.terminated("client stopped")) }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<ClientReply, any Error>) in
                mailbox.post(.call(id: id, frames: frames, timeoutMs: timeout, continuation: c))
            }
        } onCancel: {
            mailbox.post(.abandon(id: id))
        }
    }

    /// Events and FINISHED notifications for one task, from now on. The stream keeps
    /// the newest 256 updates if its reader falls behind; cancel the iterating task
    /// (or drop the stream) to unsubscribe.
    public func updates(for id: TaskID) -> AsyncStream<TaskUpdate> {
        let (stream, continuation) = AsyncStream<TaskUpdate>.makeStream(bufferingPolicy: .bufferingNewest(256))
        let token = registry.add(task: id, continuation)
        continuation.onTermination = { [registry] _ in registry.remove(task: id, token: token) }
        return stream
    }

    /// Every event whose topic starts with one of `prefixes` (empty: all), for
    /// observers such as metrics. A slow reader loses the oldest events beyond
    /// `buffer`, as a PUB/SUB subscriber would.
    public func events(prefixes: [String] = [], buffer: Int = 8192) -> AsyncStream<BrokerEvent> {
        let (stream, continuation) = AsyncStream<BrokerEvent>.makeStream(bufferingPolicy: .bufferingNewest(buffer))
        let p = prefixes.map { Array($0.utf8) }
        let token = registry.add(observer: p, continuation)
        continuation.onTermination = { [registry] _ in registry.remove(observer: token) }
        return stream
    }

    /// Subscribers per task currently registered (for tests and diagnostics).
    public var taskSubscriberCount: Int { registry.taskSubscriberCount }

    static func requestID(_ id: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: id >> (56 - 8 * $0)) }
    }

    static func decodeRequestID(_ bytes: [UInt8]) -> UInt64? {
        guard bytes.count == 8 else { return nil }
        return bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// How the socket thread tells `init` that its sockets are (or are not) set up.
private final class SetupResult: Sendable {
    let value = Mutex<Result<String?, ZMQError>?>(nil)
}

/// Who wants which events: per-task subscribers and whole-stream observers.
/// Shared by the socket thread (which delivers) and callers (who subscribe).
final class SubscriberRegistry: Sendable {
    private struct State {
        var token: UInt64 = 0
        var byTask: [TaskID: [UInt64: AsyncStream<TaskUpdate>.Continuation]] = [:]
        var all: [UInt64: (prefixes: [[UInt8]], continuation: AsyncStream<BrokerEvent>.Continuation)] = [:]
    }

    private let state = Mutex(State())

    func add(task id: TaskID, _ c: AsyncStream<TaskUpdate>.Continuation) -> UInt64 {
        state.withLock { s in
            s.token += 1
            s.byTask[id, default: [:]][s.token] = c
            return s.token
        }
    }

    func remove(task id: TaskID, token: UInt64) {
        state.withLock { s in
            s.byTask[id]?.removeValue(forKey: token)
            if s.byTask[id]?.isEmpty == true { s.byTask.removeValue(forKey: id) }
        }
    }

    func add(observer prefixes: [[UInt8]], _ c: AsyncStream<BrokerEvent>.Continuation) -> UInt64 {
        state.withLock { s in
            s.token += 1
            s.all[s.token] = (prefixes, c)
            return s.token
        }
    }

    func remove(observer token: UInt64) {
        _ = state.withLock { $0.all.removeValue(forKey: token) }
    }

    var taskSubscriberCount: Int { state.withLock { $0.byTask.values.reduce(0) { $0 + $1.count } } }

    /// Yields outside the lock: a continuation's termination handler takes it.
    func deliver(_ id: TaskID, _ update: TaskUpdate) {
        let targets = state.withLock { s in s.byTask[id].map { Array($0.values) } ?? [] }
        for t in targets { t.yield(update) }
    }

    func publish(_ event: BrokerEvent) {
        let targets = state.withLock { s in
            s.all.values.compactMap { o in
                o.prefixes.isEmpty || o.prefixes.contains(where: { event.topic.starts(with: $0) }) ? o.continuation : nil
            }
        }
        for t in targets { t.yield(event) }
    }

    /// Ends every stream (their readers see the end of the sequence).
    func finishAll() {
        let (tasks, all) = state.withLock { s in
            let t = s.byTask.values.flatMap { $0.values }
            let a = s.all.values.map(\.continuation)
            s.byTask = [:]
            s.all = [:]
            return (t, a)
        }
        for c in tasks { c.finish() }
        for c in all { c.finish() }
    }
}

/// Everything owned by the socket thread. Never leaves it (not Sendable).
private final class EventLoop {
    typealias Command = AsyncBrokerClient.Command

    struct Pending {
        let continuation: CheckedContinuation<ClientReply, any Error>
        let timeoutMs: Int
        /// Kept for a resend to another broker (several endpoints only).
        let frames: [[UInt8]]
        /// Sent to the current broker; false while waiting for a connection (failover only).
        var sent: Bool
        var since: Int64
    }

    let configuration: AsyncBrokerClient.Configuration
    let mailbox: Mailbox<Command>
    let registry: SubscriberRegistry
    let context: ZMQContext
    var dealers: [ZMQSocket]
    /// Which broker the dealers talk to.
    var ring: BrokerEndpoints
    /// The dealers were replaced: the poller must be rebuilt.
    var dealersChanged = false
    /// No failover before this (after a not_leader naming nobody).
    var pauseUntil: Int64 = 0
    let sub: ZMQSocket?
    let xpub: ZMQSocket?
    let xpubBound: String?
    var next = 0
    var pending: [UInt64: Pending] = [:]
    var deadlines = DeadlineHeap()
    /// Ids abandoned before their call reached this thread (see `abandon`).
    var earlyAbandoned: Set<UInt64> = []
    var highestSeen: UInt64 = 0
    var running = true
    static let taskPrefix = Array("task.".utf8)

    init(context: ZMQContext, configuration: AsyncBrokerClient.Configuration, mailbox: Mailbox<Command>,
         registry: SubscriberRegistry) throws(ZMQError) {
        self.configuration = configuration
        self.mailbox = mailbox
        self.registry = registry
        self.context = context
        ring = BrokerEndpoints(configuration.endpoints)
        dealers = try Self.dealers(context, configuration, ring.current)
        if let e = configuration.eventsEndpoint {
            let s = try context.socket(SocketRoles.subscriber(
                security: configuration.security, topics: configuration.topics, maxMessageSize: configuration.maxMessageSize))
            // Every broker's events: only the active one publishes.
            for one in e.split(separator: ",") { try s.connect(String(one).trimmingCharacters(in: .whitespaces)) }
            sub = s
        } else {
            sub = nil
        }
        if let out = configuration.eventsOutEndpoint {
            let x = try context.socket(SocketRoles.eventPublisher(security: configuration.eventsOutSecurity))
            try x.bind(out)
            xpub = x
            xpubBound = try x.lastEndpoint()
        } else {
            xpub = nil
            xpubBound = nil
        }
    }

    static func dealers(_ context: ZMQContext, _ configuration: AsyncBrokerClient.Configuration, _ endpoint: String) throws(ZMQError) -> [ZMQSocket] {
        var ds: [ZMQSocket] = []
        for _ in 0..<max(1, configuration.sockets) {
            let d = try context.socket(SocketRoles.clientDealer(
                security: configuration.security, immediate: true, maxMessageSize: configuration.maxMessageSize))
            try d.connect(endpoint)
            ds.append(d)
        }
        return ds
    }

    func run() {
        var poller = ZMQPoller()
        var mbIndex = poller.add(fd: mailbox.pollFD)
        var dealerIndex = dealers.map { poller.add($0) }
        var subIndex = sub.map { poller.add($0) }
        var xpubIndex = xpub.map { poller.add($0) }
        while running {
            if dealersChanged {
                dealersChanged = false
                poller = ZMQPoller()
                mbIndex = poller.add(fd: mailbox.pollFD)
                dealerIndex = dealers.map { poller.add($0) }
                subIndex = sub.map { poller.add($0) }
                xpubIndex = xpub.map { poller.add($0) }
            }
            let now = nowMs()
            // With failover, unsent and unanswered requests are looked at often.
            let tick = ring.failsOver && !pending.isEmpty ? 50 : 1000
            let wait = deadlines.peek.map { Int(max(0, min($0.deadline - now, Int64(tick)))) } ?? tick
            let ready: [Bool]
            do { ready = try poller.poll(timeoutMs: wait) } catch {
                if error.isTerminated { break }
                // Any other poll failure is a programming error in the item list; avoid spinning.
                usleep(10_000)
                continue
            }
            if ready[mbIndex] { for c in mailbox.drain() { handle(c) } }
            for (i, idx) in dealerIndex.enumerated() where ready[idx] { readReplies(dealers[i]) }
            if let s = sub, let idx = subIndex, ready[idx] { readEvents(s) }
            if let x = xpub, let idx = xpubIndex, ready[idx] { readSubscriptions(x) }
            if ring.failsOver { failOver(nowMs()) }
            expire(nowMs())
        }
        let left = pending
        pending = [:]
        for p in left.values { p.continuation.resume(throwing: ClientError.transport(ZMQError.terminated("client stopped"))) }
        for d in dealers { d.close() }
        sub?.close()
        xpub?.close()
    }

    func handle(_ command: Command) {
        switch command {
        case .stop:
            running = false
        case .abandon(let id):
            if let p = pending.removeValue(forKey: id) {
                p.continuation.resume(throwing: CancellationError())
            } else if id > highestSeen {
                earlyAbandoned.insert(id)
            }
        case .call(let id, let frames, let timeoutMs, let continuation):
            highestSeen = max(highestSeen, id)
            if earlyAbandoned.remove(id) != nil {
                continuation.resume(throwing: CancellationError())
                return
            }
            guard running else {
                continuation.resume(throwing: ClientError.transport(ZMQError.terminated("client stopped")))
                return
            }
            var lastError: ZMQError?
            for k in 0..<dealers.count {
                let d = dealers[(next + k) % dealers.count]
                do {
                    if try d.send(frames, dontWait: true) {
                        next = (next + k + 1) % dealers.count
                        pending[id] = Pending(continuation: continuation, timeoutMs: timeoutMs, frames: ring.failsOver ? frames : [], sent: true, since: nowMs())
                        deadlines.push(deadline: nowMs() + Int64(timeoutMs), id: id)
                        return
                    }
                } catch {
                    lastError = error
                }
            }
            if ring.failsOver && (lastError == nil || lastError?.isAgain == true) {
                // Not connected to this broker: another may be up. Held until a
                // connection takes it or the call times out (`failOver`).
                pending[id] = Pending(continuation: continuation, timeoutMs: timeoutMs, frames: frames, sent: false, since: nowMs())
                deadlines.push(deadline: nowMs() + Int64(timeoutMs), id: id)
                return
            }
            if let e = lastError, !e.isAgain {
                continuation.resume(throwing: ClientError.transport(e))
            } else {
                // EAGAIN with ZMQ_IMMEDIATE: no live connection (or its queue is full).
                continuation.resume(throwing: ClientError.notConnected(endpoint: configuration.endpoint))
            }
        }
    }

    func readReplies(_ socket: ZMQSocket) {
        do {
            try socket.receiveWaiting(limit: 2048) { frames in
                // proto §3.4: ignore broker messages that do not parse.
                guard let reply = try? ClientReply.decode(frames) else { return }
                if let rid = reply.requestID {
                    if case .notLeader(_, _, _, let leader) = reply, ring.failsOver,
                       let id = AsyncBrokerClient.decodeRequestID(rid), pending[id] != nil {
                        // A standby answered: go where it points; everything unanswered goes again.
                        follow(leader: leader)
                        return
                    }
                    if let id = AsyncBrokerClient.decodeRequestID(rid), let p = pending.removeValue(forKey: id) {
                        p.continuation.resume(returning: reply)
                    }
                } else if case .finished(let id, let state, let body) = reply {
                    registry.deliver(id, .finished(state: state, body: body))
                }
            }
        } catch {
            if error.isTerminated { running = false }
        }
    }

    // MARK: Failover (several endpoints)

    /// After a `not_leader`: to the broker it names, or the next after a pause.
    func follow(leader: String) {
        let (endpoint, pause) = ring.notLeader(leader: leader)
        pauseUntil = nowMs() + Int64(pause)
        switchTo(endpoint)
    }

    /// New dealers on `endpoint`; every unanswered request is sent again there.
    func switchTo(_ endpoint: String) {
        // The new ones first: if they cannot be made, the old ones stay usable.
        guard let fresh = try? Self.dealers(context, configuration, endpoint) else { return }
        for d in dealers {
            try? d.setLinger(ms: 0)
            d.close()
        }
        dealers = fresh
        dealersChanged = true
        let now = nowMs()
        for id in pending.keys {
            pending[id]?.sent = false
            pending[id]?.since = now
        }
    }

    /// Sends what waits for a connection; moves to the next broker when a
    /// request went unanswered (or unsent) for `failoverAfterMs`.
    func failOver(_ now: Int64) {
        guard !pending.isEmpty, now >= pauseUntil else { return }
        var stale = false
        for (id, p) in pending {
            if now - p.since >= Int64(BrokerEndpoints.failoverAfterMs) { stale = true }
            if !p.sent, let d = dealers.first, (try? d.send(p.frames, dontWait: true)) == true {
                pending[id]?.sent = true
            }
        }
        if stale { switchTo(ring.next()) }
    }

    func readEvents(_ socket: ZMQSocket) {
        do {
            try socket.receiveWaiting(limit: 2048) { frames in
                guard frames.count == 2, !frames[0].isEmpty else { return }
                if let x = xpub { _ = try? x.send(frames, dontWait: true) }
                let event = BrokerEvent(topic: frames[0], json: frames[1])
                registry.publish(event)
                if event.topic.starts(with: EventLoop.taskPrefix), let id = event.taskID {
                    registry.deliver(id, .event(event))
                }
            }
        } catch {
            if error.isTerminated { running = false }
        }
    }

    /// Forwards downstream (un)subscriptions upstream, as an XSUB/XPUB proxy does.
    /// Non-verbose XPUB reports only a prefix's first subscriber and last
    /// unsubscriber, and libzmq reference-counts SUB prefixes, so our own
    /// subscriptions survive a downstream unsubscribe of the same prefix.
    func readSubscriptions(_ socket: ZMQSocket) {
        for _ in 0..<1024 {
            guard let msg = try? socket.receive(dontWait: true) else { return }
            guard let frame = msg.first, let op = frame.first, let s = sub else { continue }
            let prefix = Array(frame.dropFirst())
            if op == 1 {
                try? s.subscribe(prefix)
            } else if op == 0 {
                try? s.unsubscribe(prefix)
            }
        }
    }

    func expire(_ now: Int64) {
        while let top = deadlines.peek, top.deadline <= now {
            deadlines.pop()
            if let p = pending.removeValue(forKey: top.id) {
                p.continuation.resume(throwing: ClientError.timeout(endpoint: configuration.endpoint, ms: p.timeoutMs))
            }
        }
    }
}

/// A binary min-heap of (deadline, request id). Answered requests stay in it
/// until their deadline passes and are skipped then: cheaper than removal.
private struct DeadlineHeap {
    private var items: [(deadline: Int64, id: UInt64)] = []

    var peek: (deadline: Int64, id: UInt64)? { items.first }

    mutating func push(deadline: Int64, id: UInt64) {
        items.append((deadline, id))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent].deadline <= items[i].deadline { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() {
        guard !items.isEmpty else { return }
        items.swapAt(0, items.count - 1)
        items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count, items[l].deadline < items[m].deadline { m = l }
            if r < items.count, items[r].deadline < items[m].deadline { m = r }
            if m == i { return }
            items.swapAt(i, m)
            i = m
        }
    }
}
