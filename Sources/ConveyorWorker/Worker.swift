import ConveyorCore
import ConveyorProtocol
import Logging
import ConveyorTransport
import ZeroMQ

/// A worker process's runtime: one thread owns the DEALER socket to the
/// broker; handlers run on a `HandlerPool` and report back through a
/// `Mailbox`, so the socket never leaves its thread.
///
/// It registers, heartbeats even while tasks run, and when the broker goes
/// silent it reconnects with backoff (1 s doubling to 32 s) and registers
/// again, so a restarted broker gets its workers back by itself.
public final class Worker: @unchecked Sendable {
    public struct Options: Sendable {
        /// The broker's worker endpoint; with several brokers (active and
        /// standby), the first of `brokerEndpoints`.
        public var brokerEndpoint: String {
            get { brokerEndpoints.first ?? "" }
            set { brokerEndpoints = [newValue] }
        }
        /// Every broker to try, in order (spec §9.7): on silence or DISCONNECT
        /// the worker moves to the next one at once, and waits the §8.3 backoff
        /// only when a whole round found no broker.
        public var brokerEndpoints: [String]
        public var name: String
        /// CURVE keys for the connection (`--curve-key`, `--curve-server-key`).
        public var security: SocketProfile.Security = .none
        /// Empty: any type.
        public var types: [String] = []
        public var concurrency = 1
        public var heartbeatIntervalMs: Int64 = 1000
        public var heartbeatLiveness: Int64 = 3
        /// On shutdown, how long running tasks may take to finish before they are returned.
        public var graceMs: Int64 = 5000
        /// Stop after this many tasks (benchmarks and tests); nil: run forever.
        public var maxTasks: Int?

        public init(brokerEndpoint: String, name: String) {
            self.init(brokerEndpoints: [brokerEndpoint], name: name)
        }

        public init(brokerEndpoints: [String], name: String) {
            self.brokerEndpoints = brokerEndpoints.isEmpty ? ["tcp://127.0.0.1:5556"] : brokerEndpoints
            self.name = name
        }
    }

    enum Outcome: Sendable {
        case success([UInt8], cost: Int64?)
        case failure(String)
        case retryLater(afterMs: Int64?)
    }

    enum Note: Sendable {
        case progress(TaskID, UInt16, UInt8?, String)
        case finished(TaskID, UInt16, Outcome)
        case stop
    }

    private let options: Options
    private let handler: any TaskHandler
    private let context: ZMQContext
    private let logger: Logger
    private let mailbox = Mailbox<Note>()
    private let pool: HandlerPool

    // Owned by the socket thread.
    private var socket: ZMQSocket?
    private var running: [TaskID: (attempt: UInt16, context: TaskContext)] = [:]
    private var lastHeard: Int64 = 0
    private var lastSent: Int64 = 0
    private var backoffMs: Int64 = 1000
    private var reconnectAt: Int64?
    /// The endpoint in use (index into `brokerEndpoints`), and where the
    /// current round of the list began (the last one that registered us).
    private var current = 0
    private var roundStart = 0
    private var registeredOK = false
    private var stopping = false
    private var stopDeadline: Int64 = 0
    private var completed = 0
    private var backlog: [WorkerMessage] = []
    /// Heartbeat settings in force: ours until a WELCOME brings the broker's (1.1, §6.2).
    private var heartbeatMs: Int64
    private var liveness: Int64
    /// This connection got WELCOME: the broker speaks 1.1 and takes DONE_BATCH.
    private var welcomed = false
    /// A 1.0 broker refused our READY options with DISCONNECT: register without them.
    private var plainReady = false
    /// Results finished since the last send: they leave together as one DONE_BATCH.
    private var pendingDone: [WorkerMessage.Completion] = []

    public init(options: Options, handler: any TaskHandler, context: ZMQContext, logger: Logger) {
        self.options = options
        self.handler = handler
        self.context = context
        self.logger = logger
        pool = HandlerPool(threads: options.concurrency)
        heartbeatMs = options.heartbeatIntervalMs
        liveness = options.heartbeatLiveness
    }

    /// Graceful stop, from any thread: take no new tasks, let running ones
    /// finish within the grace period, return the rest, then leave.
    public func requestStop() { mailbox.post(.stop) }

    /// Runs until stopped (or `maxTasks` done). Blocks the calling thread.
    public func run() throws {
        try connect()
        while true {
            let now = monotonicMs()
            var poller = ZMQPoller()
            let iMail = poller.add(fd: mailbox.pollFD)
            let iSock = socket.map { poller.add($0) }
            let ready = try poller.poll(timeoutMs: Int(max(0, min(heartbeatMs, (reconnectAt ?? now + 1000) - now))))
            if ready[iMail] {
                for note in mailbox.drain() { handle(note) }
                sendPendingResults()
            }
            if let i = iSock, ready[i] { try readBroker() }
            let t = monotonicMs()
            if let at = reconnectAt, t >= at { try connect() }
            if socket != nil {
                if t - lastSent >= heartbeatMs { send(.heartbeat) }
                if t - lastHeard > heartbeatMs * liveness {
                    logger.warning("broker silent; reconnecting", metadata: ["after_ms": "\(backoffMs)"])
                    scheduleReconnect()
                }
            }
            if stopping {
                if running.isEmpty || t >= stopDeadline { break }
            } else if let max = options.maxTasks, completed >= max {
                break
            }
        }
        leave()
    }

    // MARK: Connection

    private func connect() throws {
        socket?.close()
        let s = try context.socket(SocketRoles.workerDealer(security: options.security))
        try s.connect(options.brokerEndpoints[current])
        socket = s
        reconnectAt = nil
        registeredOK = false
        welcomed = false
        let now = monotonicMs()
        lastHeard = now
        // `batch` lets the broker hand us several tasks in one message (1.1).
        let batch = plainReady || options.concurrency < 2 ? nil : options.concurrency
        send(.ready(name: options.name, types: options.types, capacity: options.concurrency, batch: batch))
        if stopping { send(.drain) }
        let pending = backlog
        backlog.removeAll()
        for m in pending { send(m) }
        logger.info("registering with broker", metadata: ["broker": "\(options.brokerEndpoints[current])", "name": "\(options.name)"])
    }

    /// Leaves the current broker for the next endpoint: at once while the
    /// round of the list goes on, after the backoff (doubling to 32 s) when it
    /// comes back to where it began — with one endpoint, every time (§8.3).
    private func scheduleReconnect(soonMs: Int64? = nil) {
        socket?.close()
        socket = nil
        let next = (current + 1) % options.brokerEndpoints.count
        current = next
        if next != roundStart {
            reconnectAt = monotonicMs()
        } else {
            reconnectAt = monotonicMs() + (soonMs ?? backoffMs)
            if soonMs == nil { backoffMs = min(backoffMs * 2, 32_000) }
        }
    }

    private func send(_ m: WorkerMessage) {
        guard let s = socket else {
            // Between connections, outcomes wait for the next one: the broker
            // decides whether they still count.
            switch m {
            case .done, .fail: backlog.append(m)
            // The next connection may be to a 1.0 broker, and has no WELCOME yet.
            case .doneBatch(let items): backlog += items.map { .done(id: $0.id, attempt: $0.attempt, result: $0.result, cost: $0.cost) }
            default: break
            }
            return
        }
        do {
            _ = try s.send(m.encode(), dontWait: true)
            lastSent = monotonicMs()
        } catch {
            logger.debug("send failed", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Broker messages

    private func readBroker() throws {
        guard let s = socket else { return }
        for _ in 0..<256 {
            guard let frames = try s.receive(dontWait: true) else { return }
            lastHeard = monotonicMs()
            let message: BrokerToWorker
            do { message = try BrokerToWorker.decode(frames) } catch {
                logger.warning("malformed message from broker", metadata: ["error": "\(error)"])
                continue
            }
            // Anything but DISCONNECT means READY was accepted (§8.3).
            if !registeredOK && message != .disconnect {
                registeredOK = true
                backoffMs = 1000
                roundStart = current
            }
            switch message {
            case .heartbeat: break
            case .welcome(let hb, let lv):
                welcomed = true
                if Int64(hb) != heartbeatMs || Int64(lv) != liveness {
                    logger.info("using the broker's heartbeat", metadata: ["interval_ms": "\(hb)", "liveness": "\(lv)"])
                }
                heartbeatMs = Int64(hb)
                liveness = Int64(lv)
            case .task(let id, let attempt, let type, let priority, let timeoutMs, let payload):
                start(WorkerTask(id: id, attempt: attempt, type: type, priority: priority, timeoutMs: timeoutMs, payload: payload))
            case .taskBatch(let items):
                for a in items { start(a) }
            case .cancel(let id, let attempt, let reason):
                if let r = running[id], r.attempt == attempt {
                    logger.info("cancelling task", metadata: ["task": "\(id)", "reason": "\(reason)"])
                    running[id] = nil
                    r.context.cancel(reason: reason)
                }
            case .disconnect:
                if !registeredOK && !plainReady && options.concurrency >= 2 {
                    // No WELCOME, DISCONNECT instead: a 1.0 broker that took our READY option for malformed (§6.2).
                    logger.info("broker refused READY options; registering as a 1.0 worker")
                    plainReady = true
                    socket?.close()
                    socket = nil
                    reconnectAt = monotonicMs() + 100 // the same broker, without the options
                    return
                }
                logger.info("broker asked us to reconnect")
                backoffMs = 1000
                scheduleReconnect(soonMs: 100)
                return
            }
        }
    }

    private func start(_ task: WorkerTask) {
        if stopping {
            send(.returned(id: task.id, attempt: task.attempt))
            return
        }
        let mailbox = self.mailbox
        let ctx = TaskContext { p, m in mailbox.post(.progress(task.id, task.attempt, p, m)) }
        running[task.id] = (task.attempt, ctx)
        logger.debug("task started", metadata: ["task": "\(task.id)", "type": "\(task.type)", "attempt": "\(task.attempt)"])
        let handler = self.handler
        pool.submit {
            let outcome: Outcome
            do {
                let r = try handler.handle(task, context: ctx)
                outcome = .success(r, cost: ctx.cost)
            } catch let f as TaskFailure {
                outcome = .failure(f.description)
            } catch let r as RetryLater {
                outcome = .retryLater(afterMs: r.afterMs)
            } catch {
                outcome = .failure("\(error)")
            }
            mailbox.post(.finished(task.id, task.attempt, outcome))
        }
    }

    // MARK: Handler notes

    private func handle(_ note: Note) {
        switch note {
        case .progress(let id, let attempt, let p, let m):
            if running[id]?.attempt == attempt { send(.progress(id: id, attempt: attempt, percent: p, message: m)) }
        case .finished(let id, let attempt, let outcome):
            // A cancelled task was already forgotten: the broker expects nothing more.
            guard running[id]?.attempt == attempt else { return }
            running[id] = nil
            completed += 1
            switch outcome {
            case .success(let r, let cost): pendingDone.append(.init(id: id, attempt: attempt, result: r, cost: cost))
            case .failure(let f): send(.fail(id: id, attempt: attempt, error: f))
            case .retryLater(let ms):
                logger.info("task rate limited: retry later", metadata: ["task": "\(id)", "after_ms": "\(ms.map { "\($0)" } ?? "default")"])
                send(.retryLater(id: id, attempt: attempt, afterMs: ms))
            }
        case .stop:
            guard !stopping else { return }
            stopping = true
            stopDeadline = monotonicMs() + options.graceMs
            logger.info("stopping: taking no new tasks", metadata: ["running": "\(running.count)", "grace_ms": "\(options.graceMs)"])
            send(.drain)
        }
    }

    /// Sends the results that finished since the last send: one DONE_BATCH when
    /// there are several and the broker said WELCOME, else DONEs. Nothing waits
    /// for more results to come, so batching costs no latency.
    private func sendPendingResults() {
        guard !pendingDone.isEmpty else { return }
        if welcomed && pendingDone.count > 1 {
            var start = 0
            while start < pendingDone.count {
                let end = min(start + WorkerMessage.maxDoneBatch, pendingDone.count)
                send(.doneBatch(Array(pendingDone[start..<end])))
                start = end
            }
        } else {
            for c in pendingDone { send(.done(id: c.id, attempt: c.attempt, result: c.result, cost: c.cost)) }
        }
        pendingDone.removeAll(keepingCapacity: true)
    }

    private func leave() {
        sendPendingResults()
        for (id, r) in running {
            logger.info("returning unfinished task", metadata: ["task": "\(id)"])
            r.context.cancel(reason: "cancelled")
            send(.returned(id: id, attempt: r.attempt))
        }
        running.removeAll()
        send(.disconnect)
        // Let the last messages leave before the socket closes.
        try? socket?.setLinger(ms: 2000)
        socket?.close()
        socket = nil
        logger.info("worker stopped", metadata: ["completed": "\(completed)"])
    }
}
