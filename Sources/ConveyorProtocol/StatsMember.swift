/// The members of the stats object (spec §7.4) and of the status object
/// (§5.3), named once: the broker writes them, the gateway, the CLI and the
/// dashboards read them, and `ContractTests` checks both lists against the
/// spec's tables, so a member added in one place and not the others fails.
public enum StatsMember: String, Sendable, CaseIterable {
    case version
    case totalProcessed = "total_processed"
    case totalSuccess = "total_success"
    case totalFailed = "total_failed"
    case totalTimeout = "total_timeout"
    case totalCancelled = "total_cancelled"
    case currentProcessing = "current_processing"
    case queueSize = "queue_size"
    case maxWorkers = "max_workers"
    case maxQueueSize = "max_queue_size"
    case isRunning = "is_running"
    case queueByPriority = "queue_by_priority"
    case delayed
    case workersConnected = "workers_connected"
    case workersBusy = "workers_busy"
    case tasksReassigned = "tasks_reassigned"
    case submissionsRejected = "submissions_rejected"
    case staleResults = "stale_results"
    case malformedMessages = "malformed_messages"
    case deadLetters = "dead_letters"
    case tasksSubmitted = "tasks_submitted"
    case tasksRetried = "tasks_retried"
    case undeliverableMessages = "undeliverable_messages"
    case tasksRateLimited = "tasks_rate_limited"
    case tasksReturnedTooOften = "tasks_returned_too_often"
    case authFailures = "auth_failures"
    case authRevoked = "auth_revoked"
    case storageDegraded = "storage_degraded"
    case storageError = "storage_error"
    case journal
    case leaseEpoch = "lease_epoch"
    case types
    case dispatchLatencyMs = "dispatch_latency_ms"
    case uptimeS = "uptime_s"
    case timestamp
}

/// The members of the status object (§5.3).
public enum StatusMember: String, Sendable, CaseIterable {
    case taskID = "task_id"
    case type
    case priority
    case priorityLevel = "priority_level"
    case state
    case attempt
    case maxAttempts = "max_attempts"
    case queuePosition = "queue_position"
    case waitingFor = "waiting_for"
    case worker
    case progress
    case createdAt = "created_at"
    case startedAt = "started_at"
    case runAt = "run_at"
    case finishedAt = "finished_at"
    case timeoutMs = "timeout_ms"
    case result
    case resultBase64 = "result_base64"
    case error
    case dead
    case owner
}
