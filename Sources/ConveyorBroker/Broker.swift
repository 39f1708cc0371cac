import ConveyorCore
import ConveyorJournal
import ConveyorProtocol
import ConveyorTransport
import Foundation
import Histogram
import Logging
import Synchronization
import ZeroMQ

/// The broker process: one thread owns its three sockets and runs the
/// Majordomo-style cycle `poll → handle → dispatch → timers → flush`.
///
/// All decisions are the `Scheduler`'s; this type only moves bytes between
/// ZeroMQ, the scheduler, the journal and the event stream.
public final class Broker: @unchecked Sendable {
    public let config: BrokerConfig
    private let context: ZMQContext
    private let logger: Logger
    private let clock: any Clock
    private let control = Mailbox<Control>()
    private let journal: Journal?

    enum Control: Sendable { case stop, reloadKeys }

    // Owned by the loop thread from `run()` on.
    private var clients: ZMQSocket!
    private var workers: ZMQSocket!
    private var events: EventPublisher!
    private var scheduler: Scheduler
    private var output: [SchedulerOutput] = []
    private var replies: [(peer: [UInt8], frames: [[UInt8]])] = []
    private var latency = Histogram<UInt64>(numberOfSignificantValueDigits: .three)
    /// Percentiles walk the whole histogram (a fifth of the broker's CPU when a
    /// dashboard polls STATS): recomputed only when new dispatches were recorded,
    /// and at most every 100 ms.
    private var latencyCache: (count: UInt64, at: Timestamp, p50: Double, p90: Double, p99: Double, max: Double) = (0, 0, 0, 0, 0, 0)
    private var malformed = 0
    private var capacityWarning = CapacityWarning()
    private var lastSubmitter: PeerID?
    private var staleFromUnknownPeers = 0
    private var undeliverable = 0
    private var startedAt: Timestamp
    private var nextHeartbeat: Timestamp = 0
    private var nextStats: Timestamp = 0
    private var nextCompaction: Timestamp = 0
    private var running = true
    private var bound: (clients: String, workers: String, events: String) = ("", "", "")
    // CURVE: the allowlists, the ZAP handler, and whose key each worker connection is.
    private var keys: CurveDirectory?
    private var zap: ZAPHandler?
    private var workerKeys: [PeerID: String] = [:]
    /// Workers whose READY said `batch=N` (1.1): they may get TASK_BATCH of up to N.
    private var workerBatch: [PeerID: Int] = [:]
    /// This iteration's dispatches, grouped per worker so that several can go in one TASK_BATCH.
    private var assignments: [PeerID: [BrokerToWorker.Assignment]] = [:]
    /// Per task, the `started` events of this flush not announced yet (see `announce`).
    private var laterStarts: [TaskID: Int] = [:]
    private var revokedPeers: Set<[UInt8]> = []
    private var authRevoked = 0
    private var nextAllowlistReload: Timestamp = 0
    // Storage trouble: whether the journal commits, and what waits for a commit.
    private var storage = StorageHealth()
    private var heldReplies: [(peer: [UInt8], frames: [[UInt8]])] = []
    private var heldOutputs: [SchedulerOutput] = []
    // Leadership over a shared journal (PostgreSQL): nil lease = the only broker.
    private let lease: (any JournalLease)?
    /// Non-nil while another broker holds the lease.
    private var standby: Standby?
    private var nextLeaseRenewal: Timestamp = 0
    private var leaseRenewedAt: Timestamp = 0
    /// The epoch of the lease this broker holds (stats `lease_epoch`).
    private var leaseEpoch: Int64?
    /// Where clients reach this broker, as the lease row names it.
    private var advertised = ""
    /// Set when another broker took the journal over: the loop has stopped
    /// and nothing more may be written (the CLI exits 75).
    public private(set) var deposedReason: String?
    /// Whether this broker is the active one (always, without a shared journal).
    public var isActive: Bool { standby == nil && deposedReason == nil }

    /// - Parameter journal: nil for memory-only operation.
    public init(config: BrokerConfig, context: ZMQContext, journal: Journal?, logger: Logger, clock: any Clock = SystemClock()) {
        self.config = config
        self.context = context
        self.logger = logger
        self.clock = clock
        self.journal = journal
        lease = journal?.backend as? any JournalLease
        startedAt = clock.now()
        scheduler = Scheduler(config: config.scheduler, now: startedAt, wallNow: clock.wallNow())
    }

    /// Binds the endpoints and replays the journal. Returns the endpoints as
    /// bound (a `*` port resolved), which is what tests and `conveyor up` print.
    public func start() throws -> (clients: String, workers: String, events: String) {
        var security: (PeerRole) -> SocketProfile.Security = { _ in .none }
        if let dir = config.curveDirectory {
            guard ZMQCurve.isAvailable else { throw BrokerError("this libzmq was built without CURVE: --curve-dir needs libzmq with libsodium (Debian's libzmq5 has it)") }
            let k = try CurveDirectory(path: dir, serverName: "broker")
            // The handler must answer before any CURVE socket binds: without
            // one, libzmq admits any client that knows the broker's public key.
            let handler = ZAPHandler(context: context, directory: k, logger: logger)
            try handler.start()
            keys = k
            zap = handler
            let secret = k.serverCertificate.secretKey ?? ""
            security = { .curveServer(secretKey: secret, zapDomain: $0.zapDomain) }
            let snap = k.snapshot
            logger.info("CURVE on", metadata: [
                "dir": "\(dir)", "broker_key": "\(k.serverCertificate.publicKey)",
                "clients": "\(snap.allowed[.client]?.count ?? 0)", "workers": "\(snap.allowed[.worker]?.count ?? 0)",
                "subscribers": "\(snap.allowed[.subscriber]?.count ?? 0)", "admins": "\(snap.admins.count)",
            ])
        }
        let maxMessage = Int64(PayloadLimits.maxMessageBytes(maxPayloadBytes: config.scheduler.maxPayloadBytes))
        clients = try context.socket(SocketRoles.brokerRouter(maxMessageSize: maxMessage, security: security(.client)))
        try clients.bind(config.clientsEndpoint)
        workers = try context.socket(SocketRoles.brokerRouter(maxMessageSize: maxMessage, security: security(.worker)))
        try workers.bind(config.workersEndpoint)
        let pub = try context.socket(SocketRoles.eventPublisher(security: security(.subscriber)))
        try pub.bind(config.eventsEndpoint)
        events = EventPublisher(socket: pub)
        bound = (try clients.lastEndpoint(), try workers.lastEndpoint(), try pub.lastEndpoint())

        advertised = config.advertiseEndpoint ?? bound.clients
        if let journal, let lease {
            switch try lease.acquireLease(endpoint: advertised, ttlMs: config.leaseTTLMs) {
            case .acquired(let epoch):
                leaseEpoch = epoch
                logger.notice("journal lease taken: this broker is active", metadata: ["epoch": "\(epoch)", "journal": "\(journal.location)"])
                try recover(journal)
                leaseRenewedAt = clock.now()
                nextLeaseRenewal = leaseRenewedAt + Self.leaseRenewalUs
            case .heldElsewhere(let epoch, let endpoint):
                standby = Standby(leader: endpoint, epoch: epoch)
                logger.notice("standby: another broker holds the journal lease; answering not_leader until it expires", metadata: [
                    "active": "\(endpoint.isEmpty ? "unknown" : endpoint)", "epoch": "\(epoch)", "lease_ttl_ms": "\(config.leaseTTLMs)"])
            }
        } else if let journal {
            try recover(journal)
        }
        let s = config.scheduler
        logger.info("broker started", metadata: [
            "version": "\(ConveyorVersion.current)",
            "clients": "\(bound.clients)", "workers": "\(bound.workers)", "events": "\(bound.events)",
            "max_running": "\(s.maxRunning)", "max_queue": "\(s.maxQueue)", "task_timeout_s": "\(s.defaultTimeoutMs / 1000)",
            "heartbeat_ms": "\(s.heartbeatIntervalMs)x\(s.heartbeatLiveness)", "max_deliveries": "\(s.maxDeliveries)",
            "types": "\(s.allowedTypes.map { $0.sorted().joined(separator: ",") } ?? "any")",
            "durability": "\(journal == nil ? "none" : config.journal.durability.rawValue)",
        ])
        let p = s.policy
        if !p.isPlain || !scheduler.policy.paused.isEmpty {
            logger.info("dispatch policy", metadata: [
                "type_concurrency": "\(p.typeConcurrency.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))",
                "rate_limits": "\(p.rateLimits.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))",
                "cost_limits": "\(p.costLimits.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))",
                "aging_s": "\(p.agingUs.map { "\($0 / 1_000_000)" } ?? "off")",
                "paused": "\(scheduler.policy.paused.sorted().joined(separator: ","))",
            ])
        }
        return bound
    }

    /// Rebuilds the scheduler from the journal: at start, or when a standby takes over.
    private func recover(_ journal: Journal) throws {
        let t0 = clock.now()
        // A long recovery renews the lease as it goes: a standby must not take
        // over a journal this broker is still reading (and then lose it to us).
        var fenced: JournalFenced?
        var lastRenewal = t0
        let (fresh, info) = try journal.recoveredScheduler(config: config.scheduler, now: t0, wallNow: clock.wallNow()) { [lease, clock, config] in
            guard let lease, fenced == nil, clock.now() - lastRenewal >= Self.leaseRenewalUs else { return }
            lastRenewal = clock.now()
            do { try lease.renewLease(ttlMs: config.leaseTTLMs) } catch let f as JournalFenced { fenced = f } catch {}
        }
        if let fenced { throw BrokerError(fenced.description, exitCode: BrokerError.deposedExitCode) }
        scheduler = fresh
        scheduler.drainOutput(into: &output)
        output.removeAll()
        // A bad row never stops the broker: it is repaired or skipped, and said so.
        for line in info.repaired { logger.warning("journal row out of range, clamped", metadata: ["detail": "\(line)"]) }
        for line in info.skipped { logger.error("journal row unusable, skipped", metadata: ["detail": "\(line)"]) }
        if info.repairedCount + info.skippedCount > info.repaired.count + info.skipped.count {
            logger.warning("more journal rows were repaired or skipped than listed", metadata: [
                "repaired": "\(info.repairedCount)", "skipped": "\(info.skippedCount)"])
        }
        logger.info("journal recovered", metadata: [
            "queued": "\(info.queued)", "requeued_running": "\(info.requeuedRunning)", "delayed": "\(info.delayed)",
            "finished": "\(info.finished)", "ms": "\((clock.now() - t0) / 1000)",
        ])
    }

    /// Asks the loop to stop; safe from any thread (e.g. a signal handler's queue).
    public func requestStop() { control.post(.stop) }

    /// Asks the loop to re-read the CURVE allowlists now (SIGHUP); safe from any thread.
    public func requestKeyReload() { control.post(.reloadKeys) }

    /// Runs the loop until `requestStop()`. Call `start()` first, on the same thread.
    public func run() throws {
        var poller = ZMQPoller()
        let iClients = poller.add(clients)
        let iWorkers = poller.add(workers)
        let iEvents = poller.add(events.socket)
        let iControl = poller.add(fd: control.pollFD)
        while running {
            if standby != nil {
                // A standby answers clients not_leader, tells workers nothing, and watches the lease.
                let ready = try poller.poll(timeoutMs: standbyPollMs())
                if ready[iWorkers] { drain(workers, parkWorker) }
                if ready[iClients] { drain(clients, answerNotLeader) }
                if ready[iEvents] { events.readSubscriptions() }
                if ready[iControl] {
                    for c in control.drain() {
                        if case .stop = c { running = false }
                    }
                }
                if running, let s = standby, clock.now() >= s.nextAttempt { tryTakeover() }
                continue
            }
            let ready = try poller.poll(timeoutMs: pollTimeoutMs())
            if ready[iWorkers] { drain(workers, handleWorker) }
            if ready[iClients] { drain(clients, handleClient) }
            if ready[iEvents] { events.readSubscriptions() }
            if ready[iControl] {
                for c in control.drain() {
                    switch c {
                    case .stop: beginShutdown()
                    case .reloadKeys: reloadAllowlists()
                    }
                }
            }
            let now = clock.now()
            scheduler.setWallClock(clock.wallNow(), at: now)
            scheduler.tick(now: now)
            scheduler.dispatch(now: now)
            timers(now)
            flush(now)
        }
        try finalShutdown()
    }

    // MARK: Leadership

    /// The active broker renews its lease this often (spec §9.7: every second).
    static let leaseRenewalUs: Int64 = 1_000_000

    private func standbyPollMs() -> Int {
        guard let s = standby else { return 0 }
        let now = clock.now()
        return s.nextAttempt <= now ? 0 : Int((s.nextAttempt - now - 1) / 1000 + 1)
    }

    /// A worker's message to a standby: nothing is answered; its READY is kept for a takeover.
    private func parkWorker(_ frames: [[UInt8]], _ now: Timestamp, _ userID: String) {
        standby?.park(frames, userID: userID, now: now)
    }

    /// Every client request to a standby: `not_leader`, naming the active broker if known.
    private func answerNotLeader(_ frames: [[UInt8]], _ now: Timestamp, _ userID: String) {
        guard let s = standby, frames.count >= 2 else { return }
        // §3.4 first, by the codec as on an active broker: not our protocol is dropped,
        // another version of our header is told so; anything else gets not_leader.
        do { _ = try ClientRequest.decode(Array(frames[1...])) } catch {
            if !frames[1].starts(with: Array("CVYC".utf8)) { return }
            if error.code == ErrorCode.unsupportedVersion.rawValue {
                _ = send(clients, frames[0], ClientReply.error(requestID: error.requestID ?? [], code: error.code, message: error.message).encode())
                return
            }
        }
        guard frames.count >= 4 else { return } // no request id to answer with
        let command = frames[2]
        let submit = command == Array("SUBMIT".utf8) || command == Array("SUBMIT_BATCH".utf8)
        let rid = frames[3].count <= ClientRequest.maxRequestIDBytes ? frames[3] : []
        _ = send(clients, frames[0], ClientReply.notLeader(requestID: rid, submit: submit, message: s.message, leader: s.leader).encode())
    }

    /// A standby's look at the lease: when it expired, take it, recover the
    /// queue from the journal, register the workers that are waiting, serve.
    private func tryTakeover() {
        guard let lease, let journal, var s = standby else { return }
        let t0 = clock.now()
        s.nextAttempt = t0 + Standby.attemptIntervalUs
        let status: LeaseStatus
        do {
            status = try lease.acquireLease(endpoint: advertised, ttlMs: config.leaseTTLMs)
        } catch {
            standby = s
            logger.warning("standby cannot read the journal lease", metadata: ["error": "\(error)"])
            return
        }
        switch status {
        case .heldElsewhere(let epoch, let endpoint):
            if endpoint != s.leader || epoch != s.epoch {
                logger.info("standby: the active broker changed", metadata: ["active": "\(endpoint)", "epoch": "\(epoch)"])
            }
            s.leader = endpoint
            s.epoch = epoch
            standby = s
        case .acquired(let epoch):
            standby = nil
            leaseEpoch = epoch
            do {
                try recover(journal)
            } catch {
                depose("took the journal lease (epoch \(epoch)) but could not recover from the journal: \(error)")
                try? lease.releaseLease()
                return
            }
            let now = clock.now()
            leaseRenewedAt = now
            nextLeaseRenewal = now + Self.leaseRenewalUs
            let liveness = config.scheduler.heartbeatIntervalMs * 1000 * Int64(config.scheduler.heartbeatLiveness)
            let waiting = s.readiesToReplay(now: now, withinUs: liveness)
            for r in waiting { handleWorker(r.frames, now, r.userID) }
            logger.notice("took over: the previous active broker's lease expired; this broker is active", metadata: [
                "epoch": "\(epoch)", "previous_epoch": "\(s.epoch)", "queued": "\(scheduler.queueSize)",
                "workers_waiting": "\(waiting.count)", "takeover_ms": "\((now - t0) / 1000)",
            ])
            nextHeartbeat = now
            nextStats = now
        }
    }

    /// The active broker's renewal; a lease another broker took deposes it,
    /// and so does a whole TTL without a renewal (it cannot know who leads).
    private func renewLease(_ now: Timestamp) {
        guard let lease, standby == nil, deposedReason == nil, now >= nextLeaseRenewal else { return }
        nextLeaseRenewal = now + Self.leaseRenewalUs
        do {
            try lease.renewLease(ttlMs: config.leaseTTLMs)
            leaseRenewedAt = now
        } catch let f as JournalFenced {
            depose(f.description)
        } catch {
            if now - leaseRenewedAt >= config.leaseTTLMs * 1000 {
                depose("the journal lease could not be renewed for \(config.leaseTTLMs) ms (\(error)); another broker may have taken over")
            } else {
                logger.warning("journal lease renewal failed; retrying", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Another broker leads now: stop at once, write nothing more, and send
    /// the workers on (they move to the next broker in their list).
    private func depose(_ reason: String) {
        guard deposedReason == nil else { return }
        deposedReason = reason
        logger.critical("deposed: this broker stops serving at once", metadata: ["reason": "\(reason)"])
        for w in scheduler.allWorkers { sendToWorker(w.peer, .disconnect) }
        running = false
    }

    // MARK: Handle

    private func drain(_ socket: ZMQSocket, _ handle: ([[UInt8]], Timestamp, String) -> Void) {
        let now = clock.now()
        do {
            if keys == nil {
                try socket.receiveWaiting(limit: 512) { handle($0, now, "") }
            } else {
                try socket.receiveWaitingWithUserID(limit: 512) { handle($0, now, $1) }
            }
        } catch {
            if error.isTerminated { running = false }
        }
    }

    /// Who sent a client message: with CURVE, the key the ZAP handler let in
    /// (admins see every task); without, everyone sees everything, as before.
    struct Caller {
        let key: String?
        let isAdmin: Bool
        var owner: String? { key.map { "key:" + $0 } }
        func owns(_ t: TaskRecord) -> Bool { isAdmin || (owner != nil && t.owner == owner) }
    }

    /// False (and the message is answered `forbidden`) when the key was revoked
    /// after its connection was made: identity is the key, checked per message.
    private func stillAllowed(_ peer: [UInt8], _ userID: String, as role: PeerRole) -> Bool {
        guard let keys else { return true }
        if keys.permits(userID, as: role) { return true }
        if revokedPeers.insert(peer).inserted {
            authRevoked += 1
            logger.warning("message from a revoked key refused", metadata: ["endpoint": "\(role.rawValue)", "key": "\(userID)"])
        }
        return false
    }

    private func handleClient(_ frames: [[UInt8]], _ now: Timestamp, _ userID: String) {
        guard frames.count >= 2 else { malformed += 1; return }
        let peer = frames[0]
        let caller = Caller(key: userID.isEmpty ? nil : userID, isAdmin: keys.map { $0.isAdmin(userID) } ?? true)
        let request: ClientRequest
        do {
            request = try ClientRequest.decode(Array(frames[1...]))
        } catch {
            malformed += 1
            logger.debug("malformed client message", metadata: ["error": "\(error)"])
            // Not our protocol at all (spec §3.4): no reply, nothing to say to it.
            if !frames[1].starts(with: Array("CVYC".utf8)) { return }
            // A SUBMIT is always answered ACCEPTED or REJECTED, so clients need one code path.
            if frames.count > 2 && (frames[2] == Array("SUBMIT".utf8) || frames[2] == Array("SUBMIT_BATCH".utf8)) && error.code == "bad_request" {
                reply(peer, .rejected(requestID: error.requestID ?? [], code: error.code, message: error.message))
            } else {
                reply(peer, .error(requestID: error.requestID ?? [], code: error.code, message: error.message))
            }
            return
        }
        guard stillAllowed(peer, userID, as: .client) else {
            switch request {
            case .submit, .submitBatch:
                reply(peer, .rejected(requestID: request.requestID, code: ErrorCode.forbidden.rawValue, message: "this key is no longer allowed"))
            default:
                reply(peer, .error(requestID: request.requestID, code: ErrorCode.forbidden.rawValue, message: "this key is no longer allowed"))
            }
            return
        }
        if storage.isDegraded && request.needsJournal {
            // Nothing is changed that cannot be journaled; reads go on.
            let message = "the journal cannot be written (\(storage.error?.prefix(300) ?? "")); nothing was changed; retry later"
            switch request {
            case .submit, .submitBatch:
                reply(peer, .rejected(requestID: request.requestID, code: ErrorCode.storageUnavailable.rawValue, message: message))
            default:
                reply(peer, .error(requestID: request.requestID, code: ErrorCode.storageUnavailable.rawValue, message: message))
            }
            return
        }
        switch request {
        case .submit(let rid, let spec):
            switch submit(spec, from: peer, caller: caller, now: now) {
            case .accepted(let id, let position, let info):
                // The 1.1 frames only for a client that said `notify` (§5.2): a 1.0 client would drop them.
                reply(peer, .accepted(requestID: rid, id: id, position: position, info: spec.notify == nil ? nil : info))
            case .rejected(let code, let message):
                reply(peer, .rejected(requestID: rid, code: code, message: message))
            }
        case .submitBatch(let rid, let specs):
            reply(peer, .submitted(requestID: rid, outcomes: specs.map { submit($0, from: peer, caller: caller, now: now) }))
        case .status(let rid, let id):
            if let t = scheduler.task(id) ?? (try? journal?.lookup(id, now: scheduler.wall(now))) ?? nil, caller.owns(t) {
                reply(peer, .status(requestID: rid, json: TaskJSON.status(
                    t, position: scheduler.queuePosition(of: id, now: now), waitingFor: scheduler.waitingFor(id, now: now))))
            } else {
                reply(peer, .error(requestID: rid, code: ErrorCode.notFound.rawValue, message: "no task \(id)"))
            }
        case .cancel(let rid, let id):
            if let t = scheduler.task(id), !caller.owns(t) {
                reply(peer, .error(requestID: rid, code: ErrorCode.notFound.rawValue, message: "no task \(id)"))
                return
            }
            switch scheduler.cancel(id, now: now) {
            case .success(let previous):
                logger.info("task cancelled", metadata: ["task": "\(id)", "was": "\(previous.rawValue)"])
                reply(peer, .cancelled(requestID: rid, id: id, previous: previous.rawValue))
            case .failure(.notFound):
                reply(peer, .error(requestID: rid, code: ErrorCode.notFound.rawValue, message: "no task \(id)"))
            case .failure(.alreadyFinished(let s)):
                reply(peer, .error(requestID: rid, code: ErrorCode.notCancellable.rawValue, message: "task \(id) is already \(s.rawValue)"))
            }
        case .stats(let rid):
            reply(peer, .stats(requestID: rid, json: statsJSON(now)))
        case .tasks(let rid, let limit):
            // Another client's tasks are not listed; positions stay the true ones.
            let runningJSON = scheduler.runningTasks.filter(caller.owns).prefix(limit).map { TaskJSON.status($0, position: nil) }
            let queued = scheduler.queuedInOrder(limit: caller.isAdmin ? limit : ClientRequest.maxTasksLimit, now: now)
            var queuedJSON: [[UInt8]] = []
            for (position, t) in queued.enumerated() where caller.owns(t) {
                if queuedJSON.count == limit { break }
                queuedJSON.append(TaskJSON.status(t, position: position, waitingFor: scheduler.waitingFor(t.id, now: now)))
            }
            var w = JSONWriter()
            w.field("running", raw: JSONWriter.array(Array(runningJSON)))
            w.field("queued", raw: JSONWriter.array(Array(queuedJSON)))
            w.field("queue_size", scheduler.queueSize)
            w.field("workers", raw: WorkerJSON.list(scheduler.allWorkers, now: now, wall: scheduler.wall))
            reply(peer, .tasks(requestID: rid, json: w.finish()))
        case .ping(let rid):
            reply(peer, .pong(requestID: rid))
        case .dead(let rid, let action):
            guard caller.isAdmin else { return reply(peer, .error(requestID: rid, code: ErrorCode.forbidden.rawValue, message: "dead letters need an admin key")) }
            handleDead(peer, rid, action, now)
        case .type(let rid, let action, let type):
            guard caller.isAdmin else { return reply(peer, .error(requestID: rid, code: ErrorCode.forbidden.rawValue, message: "pausing a type needs an admin key")) }
            let changed = action == .pause ? scheduler.pause(type: type) : scheduler.resume(type: type)
            if changed { logger.notice("type \(action == .pause ? "paused" : "resumed")", metadata: ["type": "\(type)"]) }
            var w = JSONWriter()
            w.field("type", type)
            w.field("paused", scheduler.policy.paused.contains(type))
            w.field("changed", changed)
            reply(peer, .type(requestID: rid, json: w.finish()))
        }
    }

    /// One submission, from SUBMIT or SUBMIT_BATCH.
    private func submit(_ spec: TaskSpec, from peer: [UInt8], caller: Caller, now: Timestamp) -> SubmitOutcome {
        var spec = spec
        // A task belongs to the key that submitted it; an admin (the gateway)
        // may name the owner, e.g. the HTTP token it came with.
        if keys != nil && !(caller.isAdmin && spec.owner != nil) { spec.owner = caller.owner }
        scheduler.setWallClock(clock.wallNow(), at: now)
        if let key = spec.idempotencyKey, let journal, !scheduler.knowsIdempotencyKey(key, owner: spec.owner) {
            // Older than what memory keeps, but maybe still within the retention:
            // the journal decides whether this is a resubmission.
            do {
                if let t = try journal.lookup(idempotencyKey: key, owner: spec.owner, now: scheduler.wall(now)) {
                    scheduler.restore(t, idempotencyKey: key, now: scheduler.wall(now))
                }
            } catch {
                return .rejected(code: ErrorCode.storageUnavailable.rawValue,
                                 message: "cannot check the idempotency key in the journal (\(error)); nothing was enqueued; retry later")
            }
        }
        switch scheduler.submit(spec, from: intern(peer), now: now) {
        case .success(let a):
            return .accepted(id: a.id, position: a.state == .queued ? a.position : 0, info: Acceptance(duplicate: a.duplicate, state: a.state))
        case .failure(let r):
            if r.code == ErrorCode.queueFull.rawValue {
                logger.warning("task rejected: queue full", metadata: ["type": "\(spec.type)", "max_queue": "\(config.scheduler.maxQueue)"])
            }
            return .rejected(code: r.code, message: r.message)
        }
    }

    private func handleDead(_ peer: [UInt8], _ rid: [UInt8], _ action: ClientRequest.DeadAction, _ now: Timestamp) {
        switch action {
        case .list(let limit):
            var all = scheduler.deadLetters
            if let journal, let stored = try? journal.deadLetters(limit: 10_000, now: scheduler.wall(now)) {
                // Dead letters older than memory keeps are listed from the journal.
                let known = Set(all.map(\.id))
                all += stored.filter { !known.contains($0.id) }
                all.sort { $0.seq < $1.seq }
            }
            var w = JSONWriter()
            w.field("dead", raw: JSONWriter.array(all.prefix(limit).map { TaskJSON.status($0, position: nil) }))
            w.field("count", all.count)
            reply(peer, .dead(requestID: rid, json: w.finish()))
        case .retry(let id):
            restoreDeadLetter(id, now)
            switch scheduler.retryDead(id, now: now) {
            case .success:
                var w = JSONWriter()
                w.field("retried", id.description)
                reply(peer, .dead(requestID: rid, json: w.finish()))
            case .failure(let r):
                reply(peer, .error(requestID: rid, code: r.code, message: r.message))
            }
        case .purge(let id):
            if let id {
                restoreDeadLetter(id, now)
            } else if let journal, let stored = try? journal.deadLetters(limit: 10_000, now: scheduler.wall(now)) {
                for t in stored where scheduler.task(t.id) == nil { scheduler.restore(t, idempotencyKey: nil, now: scheduler.wall(now)) }
            }
            let n = scheduler.purgeDead(id)
            if let id, n == 0 {
                reply(peer, .error(requestID: rid, code: ErrorCode.notFound.rawValue, message: "no dead-lettered task \(id)"))
                return
            }
            var w = JSONWriter()
            w.field("purged", n)
            reply(peer, .dead(requestID: rid, json: w.finish()))
        }
    }

    /// A dead letter only the journal still holds comes back into memory, so
    /// that `dead retry` and `dead purge` reach it like any other.
    private func restoreDeadLetter(_ id: TaskID, _ now: Timestamp) {
        guard scheduler.task(id) == nil, let journal,
              let t = try? journal.lookup(id, now: scheduler.wall(now)), t.details?.dead == true else { return }
        scheduler.restore(t, idempotencyKey: t.details?.idempotencyKey, now: scheduler.wall(now))
    }

    private func handleWorker(_ frames: [[UInt8]], _ now: Timestamp, _ userID: String) {
        guard frames.count >= 2 else { malformed += 1; return }
        let peer = PeerID(frames[0])
        guard stillAllowed(frames[0], userID, as: .worker) else {
            // A revoked worker loses its connection and its tasks go elsewhere.
            if scheduler.worker(peer) != nil { scheduler.workerGone(peer, reason: "key revoked", now: now) }
            workerKeys[peer] = nil
            sendToWorker(peer, .disconnect)
            return
        }
        let message: WorkerMessage
        do {
            message = try WorkerMessage.decode(Array(frames[1...]))
        } catch {
            malformed += 1
            logger.debug("malformed worker message", metadata: ["error": "\(error)"])
            // An unregistered peer that cannot even say READY is told to start
            // over — in our own protocol only: anything else is dropped (§3.4, §6.2).
            if scheduler.worker(peer) == nil && frames[1] == WorkerMessage.header { sendToWorker(peer, .disconnect) }
            return
        }
        if case .ready(let name, let types, let capacity, let batch) = message {
            let reg = scheduler.register(worker: peer, name: name, types: types.isEmpty ? nil : Set(types), capacity: capacity, now: now)
            if !userID.isEmpty { workerKeys[peer] = userID }
            workerBatch[peer] = batch.map { min($0, reg.capacity) }
            // Before any TASK: the worker learns at once that it is registered and our heartbeat (§6.2).
            sendToWorker(peer, .welcome(heartbeatMs: Int(config.scheduler.heartbeatIntervalMs), liveness: Int(config.scheduler.heartbeatLiveness)))
            logger.info("worker joined", metadata: ["worker": "\(reg.name)", "types": "\(types.isEmpty ? "any" : types.joined(separator: ","))", "capacity": "\(reg.capacity)"])
            if reg.name != name { logger.warning("worker name already in use by another connection: registered under a suffixed name", metadata: ["asked": "\(name)", "worker": "\(reg.name)"]) }
            if let asked = reg.askedCapacity {
                logger.warning("worker asked for more capacity than --max-worker-capacity allows: capped", metadata: ["worker": "\(reg.name)", "asked": "\(asked)", "capacity": "\(reg.capacity)"])
            }
            if let warning = capacityWarning.check(totalCapacity: scheduler.allWorkers.reduce(0, { $0 + $1.capacity }), maxRunning: config.scheduler.maxRunning) { logger.warning("\(warning)") }
            return
        }
        guard scheduler.heard(from: peer, now: now) else {
            switch message {
            case .done, .fail, .progress, .retryLater: staleFromUnknownPeers += 1 // an attempt that was already taken away
            case .doneBatch(let items): staleFromUnknownPeers += items.count
            default: break
            }
            if message != .disconnect { sendToWorker(peer, .disconnect) }
            return
        }
        switch message {
        case .ready, .heartbeat: break
        case .progress(let id, let a, let p, let m): scheduler.progress(id, attempt: a, percent: p, message: m, from: peer, now: now)
        case .done(let id, let a, let r, let cost): scheduler.succeeded(id, attempt: a, result: r, cost: cost, from: peer, now: now)
        case .doneBatch(let items):
            for c in items { scheduler.succeeded(c.id, attempt: c.attempt, result: c.result, cost: c.cost, from: peer, now: now) }
        case .fail(let id, let a, let e): scheduler.failed(id, attempt: a, error: e, from: peer, now: now)
        case .drain: scheduler.drain(worker: peer)
        case .returned(let id, let a):
            let who = scheduler.worker(peer)?.name ?? "?"
            if scheduler.returned(id, attempt: a, from: peer, now: now) == .deadLettered {
                logger.warning("task returned too often: dead-lettered returned_too_often", metadata: [
                    "task": "\(id)", "worker": "\(who)", "max_returns": "\(config.scheduler.maxReturns)"])
            }
        case .retryLater(let id, let a, let ms): scheduler.retryLater(id, attempt: a, afterMs: ms, from: peer, now: now)
        case .disconnect:
            scheduler.workerGone(peer, reason: "disconnected", now: now)
            workerKeys[peer] = nil
            workerBatch[peer] = nil
        }
    }

    /// Re-reads the allowlists; a worker whose key is gone is disconnected at
    /// once and its tasks reassigned (clients are refused from their next message).
    private func reloadAllowlists() {
        guard let keys else { return }
        workerKeys = workerKeys.filter { scheduler.worker($0.key) != nil }
        let r = keys.reload()
        if let e = r.error { logger.error("cannot re-read the CURVE allowlists; keeping the previous ones", metadata: ["error": "\(e)"]) }
        for g in r.added { logger.notice("key allowed", metadata: ["grant": "\(g)"]) }
        for g in r.revoked { logger.warning("key revoked", metadata: ["grant": "\(g)"]) }
        guard !r.revoked.isEmpty else { return }
        let now = clock.now()
        for (peer, key) in workerKeys where !keys.permits(key, as: .worker) {
            if revokedPeers.insert(peer.bytes).inserted { authRevoked += 1 }
            scheduler.workerGone(peer, reason: "key revoked", now: now)
            sendToWorker(peer, .disconnect)
            workerKeys[peer] = nil
        }
    }

    /// Tasks from one connection share one copy of its routing id instead of
    /// an allocation each: tens of bytes per queued task.
    private func intern(_ peer: [UInt8]) -> PeerID {
        if let last = lastSubmitter, last.bytes == peer { return last }
        let p = PeerID(peer)
        lastSubmitter = p
        return p
    }

    private func reply(_ peer: [UInt8], _ r: ClientReply) {
        replies.append((peer, r.encode()))
    }

    // MARK: Timers

    private func pollTimeoutMs() -> Int {
        let now = clock.now()
        var next = min(nextHeartbeat, nextStats)
        // Includes holds and rate windows running out: no busy polling.
        if let d = scheduler.nextDeadline(now: now) { next = min(next, d) }
        if storage.isDegraded { next = min(next, storage.retryAt) }
        if lease != nil { next = min(next, nextLeaseRenewal) }
        // Saturating: a deadline can be "never" (Int64.max).
        let ms = next <= now ? 0 : (next - now - 1) / 1000 + 1
        return Int(min(ms, config.scheduler.heartbeatIntervalMs))
    }

    private func timers(_ now: Timestamp) {
        renewLease(now)
        if now >= nextHeartbeat {
            for w in scheduler.allWorkers { sendToWorker(w.peer, .heartbeat) }
            if !workerBatch.isEmpty { workerBatch = workerBatch.filter { scheduler.worker($0.key) != nil } }
            nextHeartbeat = now + config.scheduler.heartbeatIntervalMs * 1000
        }
        if keys != nil, now >= nextAllowlistReload {
            if nextAllowlistReload != 0 { reloadAllowlists() }
            nextAllowlistReload = now + config.allowlistReloadMs * 1000
        }
        if now >= nextStats {
            if events.wants("stats") { events.publish("stats", statsJSON(now)) }
            nextStats = now + config.statsIntervalMs * 1000
        }
        if let journal, now >= nextCompaction, !storage.isDegraded {
            do { try journal.compact(olderThan: scheduler.wall(now) - config.scheduler.resultTTLSeconds * 1_000_000) } catch {
                logger.error("journal compaction failed", metadata: ["error": "\(error)"])
            }
            nextCompaction = now + 60_000_000
        }
    }

    // MARK: Flush

    /// Journals this iteration's events, commits once, then sends: nothing is
    /// acknowledged before it is as durable as the mode promises.
    ///
    /// A commit that fails degrades the broker instead of stopping it
    /// (`StorageHealth`): the changes stay staged in the journal, the replies
    /// and notices that report them are held until a later commit (retried
    /// with backoff) succeeds, and reads still go out at once.
    private func flush(_ now: Timestamp) {
        // Requests handled while already degraded were admitted only if they
        // change nothing (the rest were refused): their replies may all go.
        let repliesChangeNothing = storage.isDegraded
        for _ in 0..<4 {
            scheduler.drainOutput(into: &output)
            let retryDue = storage.isDegraded && storage.mayCommit(now)
            if output.isEmpty && replies.isEmpty && !retryDue { return }
            // Workers need not wait for the fsync: a crash before the commit
            // only means the task runs again (at-least-once), and a worker
            // round trip per fsync would cap throughput at slots / fsync time.
            for o in output where o.isForWorker { perform(o, now) }
            sendAssignments(now)
            if journalCommit(now) {
                releaseHeld(now)
                for (peer, frames) in replies { send(clients, peer, frames) }
                replies.removeAll(keepingCapacity: true)
                laterStarts.removeAll(keepingCapacity: true)
                for case .event(.started(let id, _, _, _)) in output { laterStarts[id, default: 0] += 1 }
                for o in output where !o.isForWorker { perform(o, now) }
            } else {
                holdUncommitted(now, repliesChangeNothing: repliesChangeNothing)
            }
            // Sends can fail (a worker vanished), which requeues: dispatch again.
            scheduler.dispatch(now: now)
        }
    }

    /// Stages this iteration's events and commits; false when they are not
    /// durable (the commit failed, or a degraded journal's retry is not due).
    private func journalCommit(_ now: Timestamp) -> Bool {
        guard let journal else { return true }
        do {
            for case .event(let e) in output {
                journal.record(e, task: e.taskID.flatMap { scheduler.task($0) })
            }
            guard storage.mayCommit(now) else { return false }
            try journal.commit()
        } catch let f as JournalFenced {
            depose(f.description)
            return false
        } catch {
            if storage.failed("\(error)", now: now) {
                logger.critical("journal commit failed: storage unavailable; the broker keeps running degraded — submissions and changes are refused storage_unavailable, reads go on, running tasks finish into memory, and the commit is retried until it succeeds",
                                metadata: ["error": "\(error)"])
            } else if storage.failures % 20 == 0 {
                logger.error("journal still cannot commit", metadata: ["attempts": "\(storage.failures)", "error": "\(error)"])
            }
            return false
        }
        if let outage = storage.succeeded(now: now) {
            logger.notice("journal writable again: service resumed", metadata: [
                "unavailable_ms": "\(outage / 1000)", "held_replies": "\(heldReplies.count)", "held_notices": "\(heldOutputs.count)",
            ])
        }
        return true
    }

    /// After a failed commit: reads leave now, acknowledgements and notices of
    /// the uncommitted changes wait for the commit (progress is never journaled).
    private func holdUncommitted(_ now: Timestamp, repliesChangeNothing: Bool) {
        for r in replies {
            if repliesChangeNothing || ReadReply.isRead(r.frames) { send(clients, r.peer, r.frames) } else { heldReplies.append(r) }
        }
        replies.removeAll(keepingCapacity: true)
        for o in output where !o.isForWorker {
            if o.isTransient { perform(o, now) } else { heldOutputs.append(o) }
        }
    }

    /// After the commit that ended a storage outage: what it made durable, in order.
    private func releaseHeld(_ now: Timestamp) {
        guard !heldReplies.isEmpty || !heldOutputs.isEmpty else { return }
        for (peer, frames) in heldReplies { send(clients, peer, frames) }
        heldReplies.removeAll()
        let outputs = heldOutputs
        heldOutputs.removeAll()
        for o in outputs { perform(o, now) }
    }

    private func perform(_ o: SchedulerOutput, _ now: Timestamp) {
        switch o {
        case .assign(let peer, let id, let attempt):
            guard let t = scheduler.task(id) else { return }
            assignments[peer, default: []].append(.init(id: id, attempt: attempt, type: t.type, priority: t.priority, timeoutMs: t.timeoutMs, payload: t.payload))
        case .cancelOnWorker(let peer, let id, let attempt, let reason):
            sendToWorker(peer, .cancel(id: id, attempt: attempt, reason: reason.rawValue))
        case .notifyProgress(let c, let id, let p, let m):
            send(clients, c.bytes, ClientReply.progress(id: id, percent: p, message: m).encode())
        case .notifyFinished(let c, let id, let state, let body):
            send(clients, c.bytes, ClientReply.finished(id: id, state: state.rawValue, body: body).encode())
        case .event(let e):
            announce(e, now)
        }
    }

    /// Sends the dispatches collected by `perform`: TASK_BATCH to a worker that
    /// takes them and got more than one, TASK otherwise, in dispatch order.
    private func sendAssignments(_ now: Timestamp) {
        guard !assignments.isEmpty else { return }
        for (peer, tasks) in assignments {
            // Chunks of the worker's READY `batch` (1 without it); a chunk of one is a TASK.
            let size = max(1, workerBatch[peer] ?? 1)
            var start = 0
            var sent = true
            while sent && start < tasks.count {
                let chunk = tasks[start..<min(start + size, tasks.count)]
                if chunk.count == 1, let a = chunk.first {
                    sent = sendToWorker(peer, .task(id: a.id, attempt: a.attempt, type: a.type, priority: a.priority, timeoutMs: a.timeoutMs, payload: a.payload))
                } else {
                    sent = sendToWorker(peer, .taskBatch(Array(chunk)))
                }
                start += chunk.count
            }
            // Whatever did not go out is requeued with the worker's other tasks.
            if !sent { scheduler.workerGone(peer, reason: "unreachable", now: now) }
        }
        assignments.removeAll(keepingCapacity: true)
    }


    @discardableResult
    private func sendToWorker(_ peer: PeerID, _ m: BrokerToWorker) -> Bool {
        send(workers, peer.bytes, m.encode())
    }

    /// Sends to a ROUTER peer without ever blocking. False if the peer is gone
    /// (EHOSTUNREACH) or its queue is full (EAGAIN); the message is dropped.
    @discardableResult
    private func send(_ socket: ZMQSocket, _ peer: [UInt8], _ frames: [[UInt8]]) -> Bool {
        var all = [peer]
        all.append(contentsOf: frames)
        do {
            if try socket.send(all, dontWait: true) { return true }
        } catch {
            if error.isTerminated { running = false }
        }
        undeliverable += 1
        return false
    }

    // MARK: Events and logs

    private func announce(_ e: TaskEvent, _ now: Timestamp) {
        let t = e.taskID.flatMap { scheduler.task($0) }
        let wall = scheduler.wall(now)
        // The record is as the whole loop turn left it; dispatches announced after
        // this event had not happened yet when it did.
        // (A `started` event counts its own dispatch: it leaves the count first.)
        if case .started(let id, _, _, _) = e, let n = laterStarts[id] { laterStarts[id] = n > 1 ? n - 1 : nil }
        let attempt = t.map { $0.attempt &- UInt16(clamping: laterStarts[$0.id] ?? 0) }
        func pub(_ topic: String, _ id: TaskID, _ extra: (inout JSONWriter) -> Void = { _ in }) {
            guard events.wants(topic) else { return }
            events.publish(topic, TaskJSON.event(String(topic.dropFirst(5)), t, id: id, attempt: attempt, now: wall, extra: extra))
        }
        func pubType(_ topic: String, _ type: String, _ extra: (inout JSONWriter) -> Void = { _ in }) {
            guard events.wants(topic) else { return }
            var w = JSONWriter()
            w.field("event", String(topic.dropFirst(5))); w.field("type", type); w.field("ts", wall.rfc3339)
            extra(&w)
            events.publish(topic, w.finish())
        }
        switch e {
        case .queued(let id, let pos):
            logger.info("task queued", metadata: ["task": "\(id)", "type": "\(t?.type ?? "")", "priority": "\(t?.priority.name ?? "")",
                                                   "queue": "\(scheduler.queueSize)/\(config.scheduler.maxQueue)"])
            pub("task.queued", id) { $0.field("queue_position", pos) }
        case .delayed(let id, let at):
            pub("task.delayed", id) { $0.field("run_at", at.rfc3339) }
        case .due(let id):
            pub("task.queued", id) { $0.field("queue_position", self.scheduler.queuePosition(of: id, now: now) ?? 0) }
        case .started(let id, _, let worker, let lat):
            latency.record(UInt64(max(0, lat)))
            logger.info("task dispatched", metadata: ["task": "\(id)", "worker": "\(worker)", "remaining": "\(scheduler.queueSize)"])
            pub("task.started", id) { $0.field("worker", worker) }
        case .progress(let id, _, let p, let m):
            pub("task.progress", id) { $0.field("percent", p.map { Int($0) }); $0.field("message", m) }
        case .succeeded(let id, let d):
            logger.info("task finished", metadata: ["task": "\(id)", "outcome": "succeeded", "ms": "\(d / 1000)"])
            pub("task.succeeded", id) { $0.field("duration_ms", d / 1000); $0.field("result_size", t?.details?.result?.count ?? 0) }
        case .failed(let id, let err, let d):
            logger.info("task finished", metadata: ["task": "\(id)", "outcome": "failed", "ms": "\(d / 1000)", "error": "\(err.prefix(200))"])
            pub("task.failed", id) { $0.field("error", err); $0.field("duration_ms", d / 1000) }
            pub("task.dead", id)
        case .timedOut(let id, let d):
            logger.warning("task timed out", metadata: ["task": "\(id)", "ms": "\(d / 1000)"])
            pub("task.timed_out", id) { $0.field("error", t?.details?.error ?? "timed out"); $0.field("duration_ms", d / 1000) }
            pub("task.dead", id)
        case .retrying(let id, let at, let err):
            logger.info("task will retry", metadata: ["task": "\(id)", "run_at": "\(at.rfc3339)", "error": "\(err.prefix(200))"])
            pub("task.retrying", id) { $0.field("run_at", at.rfc3339); $0.field("error", err) }
        case .reassigned(let id, let from):
            logger.warning("task reassigned", metadata: ["task": "\(id)", "from": "\(from)"])
            pub("task.reassigned", id) { $0.field("from_worker", from) }
        case .returned(let id, let from):
            logger.info("task returned", metadata: ["task": "\(id)", "from": "\(from)"])
            // Not `task.reassigned`: that one says a worker was lost (§7.2).
            pub("task.returned", id) { $0.field("from_worker", from) }
        case .cancelled(let id, let prev):
            pub("task.cancelled", id) { $0.field("previous_state", prev.rawValue) }
        case .deadRetried(let id):
            logger.info("dead letter retried", metadata: ["task": "\(id)"])
            pub("task.queued", id) { $0.field("queue_position", self.scheduler.queuePosition(of: id, now: now) ?? 0) }
        case .purged, .expired:
            break
        case .rateLimited(let id, let from, let ms):
            logger.warning("task rate limited by its API: back in the queue", metadata: ["task": "\(id)", "worker": "\(from)", "retry_after_ms": "\(ms)"])
            pub("task.rate_limited", id) { $0.field("from_worker", from); $0.field("retry_after_ms", ms) }
        case .typeHeld(let type, let until):
            logger.warning("type held after a rate-limit answer", metadata: ["type": "\(type)", "until": "\(until.rfc3339)"])
            pubType("type.held", type) { $0.field("held_until", until.rfc3339) }
        case .typeReleased(let type):
            logger.info("type released", metadata: ["type": "\(type)"])
            pubType("type.released", type)
        case .typePaused(let type):
            pubType("type.paused", type)
        case .typeResumed(let type):
            pubType("type.resumed", type)
        case .workerJoined(let name, let types, let cap):
            if events.wants("worker.joined") {
                var w = JSONWriter()
                w.field("event", "joined"); w.field("worker", name); w.field(strings: types, key: "types"); w.field("capacity", cap); w.field("ts", wall.rfc3339)
                events.publish("worker.joined", w.finish())
            }
        case .workerLost(let name, let reason):
            logger.warning("worker lost", metadata: ["worker": "\(name)", "reason": "\(reason)"])
            if events.wants("worker.lost") {
                var w = JSONWriter()
                w.field("event", "lost"); w.field("worker", name); w.field("reason", reason); w.field("ts", wall.rfc3339)
                events.publish("worker.lost", w.finish())
            }
        }
    }

    private func latencySummary(_ now: Timestamp) -> (count: UInt64, p50: Double, p90: Double, p99: Double, max: Double) {
        let c = latencyCache
        if latency.totalCount != c.count && (now - c.at >= 100_000 || c.count == 0) {
            latencyCache = (latency.totalCount, now, Double(latency.valueAtPercentile(50)) / 1000, Double(latency.valueAtPercentile(90)) / 1000,
                            Double(latency.valueAtPercentile(99)) / 1000, Double(latency.max) / 1000)
        }
        let r = latencyCache
        return (r.count, r.p50, r.p90, r.p99, r.max)
    }

    private func statsJSON(_ now: Timestamp) -> [UInt8] {
        let c = scheduler.counters
        let s = config.scheduler
        var w = JSONWriter(capacity: 768)
        w.field(StatsMember.version.rawValue, ConveyorVersion.current)
        w.field(StatsMember.totalProcessed.rawValue, c.succeeded + c.failed + c.timedOut)
        w.field(StatsMember.totalSuccess.rawValue, c.succeeded)
        w.field(StatsMember.totalFailed.rawValue, c.failed)
        w.field(StatsMember.totalTimeout.rawValue, c.timedOut)
        w.field(StatsMember.totalCancelled.rawValue, c.cancelled)
        w.field(StatsMember.currentProcessing.rawValue, scheduler.runningCount)
        w.field(StatsMember.queueSize.rawValue, scheduler.queueSize)
        w.field(StatsMember.maxWorkers.rawValue, s.maxRunning)
        w.field(StatsMember.maxQueueSize.rawValue, s.maxQueue)
        w.field(StatsMember.isRunning.rawValue, running && scheduler.isAcceptingTasks)
        w.beginObject(StatsMember.queueByPriority.rawValue)
        for p in Priority.dispatchOrder { w.field(p.name.lowercased(), scheduler.queueSize(p)) }
        w.endObject()
        w.field(StatsMember.delayed.rawValue, scheduler.delayed)
        w.field(StatsMember.workersConnected.rawValue, scheduler.allWorkers.count)
        w.field(StatsMember.workersBusy.rawValue, scheduler.workersBusy)
        w.field(StatsMember.tasksSubmitted.rawValue, c.submitted)
        w.field(StatsMember.tasksReassigned.rawValue, c.reassigned)
        w.field(StatsMember.tasksRetried.rawValue, c.retried)
        w.field(StatsMember.submissionsRejected.rawValue, c.rejected)
        w.field(StatsMember.staleResults.rawValue, c.staleResults + staleFromUnknownPeers)
        w.field(StatsMember.malformedMessages.rawValue, malformed)
        w.field(StatsMember.undeliverableMessages.rawValue, undeliverable)
        w.field(StatsMember.deadLetters.rawValue, scheduler.deadLetterCount)
        w.field(StatsMember.tasksRateLimited.rawValue, c.rateLimited)
        w.field(StatsMember.tasksReturnedTooOften.rawValue, c.returnedTooOften)
        w.field(StatsMember.authFailures.rawValue, zap?.authFailures ?? 0)
        w.field(StatsMember.authRevoked.rawValue, authRevoked)
        w.field(StatsMember.storageDegraded.rawValue, storage.isDegraded)
        w.field(StatsMember.storageError.rawValue, storage.error)
        w.field(StatsMember.journal.rawValue, journal.map { $0.location.hasPrefix("sqlite:") ? "sqlite" : "postgres" } ?? "none")
        w.field(StatsMember.leaseEpoch.rawValue, leaseEpoch.map { Int($0) })
        w.beginObject(StatsMember.types.rawValue)
        for ts in scheduler.typeStats(now: now) { TaskJSON.typeStats(ts, into: &w) }
        w.endObject()
        let l = latencySummary(now)
        w.beginObject(StatsMember.dispatchLatencyMs.rawValue)
        w.field("p50", l.p50)
        w.field("p90", l.p90)
        w.field("p99", l.p99)
        w.field("max", l.max)
        w.field("count", Int(l.count))
        w.endObject()
        w.field(StatsMember.uptimeS.rawValue, (now - startedAt) / 1_000_000)
        w.field(StatsMember.timestamp.rawValue, scheduler.wall(now).rfc3339)
        return w.finish()
    }

    // MARK: Shutdown

    private func beginShutdown() {
        guard scheduler.isAcceptingTasks else { return }
        logger.info("broker stopping: intake closed, flushing")
        scheduler.stopAccepting()
        running = false
    }

    private func finalShutdown() throws {
        if deposedReason != nil || standby != nil {
            // Deposed (another broker leads: nothing more may be written) or
            // never active (nothing staged): close and go.
            try? journal?.close()
            closeSockets()
            if let reason = deposedReason { throw BrokerError(reason, exitCode: BrokerError.deposedExitCode) }
            logger.info("standby broker stopped")
            return
        }
        let now = clock.now()
        flush(now)
        // Storage still failing: a few more tries before stopping without what it could not take.
        let giveUp = now + 5_000_000
        while storage.isDegraded {
            let t = clock.now()
            guard t < giveUp else { break }
            if storage.mayCommit(t) { flush(t) } else { usleep(UInt32(max(1000, min(100_000, storage.retryAt - t)))) }
        }
        // Tell workers; they reconnect to whichever broker comes back.
        for w in scheduler.allWorkers { sendToWorker(w.peer, .disconnect) }
        var lost: String?
        if let journal {
            do { try journal.commit() } catch {
                logger.error("final journal commit failed", metadata: ["error": "\(error)"])
            }
            if let lease, journal.uncommittedChanges == 0 {
                // A clean stop: the standby takes over now instead of after the TTL.
                do { try lease.releaseLease() } catch {
                    logger.warning("could not release the journal lease; the standby takes over when it expires", metadata: ["error": "\(error)"])
                }
            }
            if storage.isDegraded || journal.uncommittedChanges > 0 {
                lost = "stopped while the journal could not be written (\(storage.error ?? "unknown error")): \(journal.uncommittedChanges) changes were not journaled; none was acknowledged (their replies were held), and their tasks run again after a restart"
            }
            if let sqlite = journal.backend as? SQLiteJournal {
                // The main file alone then holds every task: what a copy of "the journal file" needs.
                do {
                    if try sqlite.closeCheckpointed() {
                        logger.info("journal checkpointed and closed", metadata: ["file": "\(sqlite.path)"])
                    } else {
                        logger.warning("journal closed with its WAL not folded in (a reader held it, or storage failed): keep its -wal file with it", metadata: ["file": "\(sqlite.path)"])
                    }
                } catch {
                    logger.error("closing the journal failed", metadata: ["error": "\(error)"])
                }
            } else {
                do { try journal.close() } catch {
                    logger.error("closing the journal failed", metadata: ["error": "\(error)"])
                }
            }
        }
        closeSockets()
        logger.info("broker stopped")
        if let lost { throw BrokerError(lost) }
    }

    private func closeSockets() {
        // Give the last replies and DISCONNECTs a moment to leave.
        for s in [clients, workers] { try? s?.setLinger(ms: 1000) }
        clients.close()
        workers.close()
        events.socket.close()
        zap?.stop()
    }
}

extension JSONWriter {
    mutating func field(strings: [String], key: String) { field(key, strings: strings) }
}

extension SchedulerOutput {
    /// Messages to workers, which carry no promise of durability to anyone.
    var isForWorker: Bool {
        switch self {
        case .assign, .cancelOnWorker: true
        case .notifyProgress, .notifyFinished, .event: false
        }
    }

    /// Progress: never journaled, so never waits for a commit.
    var isTransient: Bool {
        switch self {
        case .notifyProgress, .event(.progress): true
        default: false
        }
    }
}
