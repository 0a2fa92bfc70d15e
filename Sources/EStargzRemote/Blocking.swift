import Dispatch
import Foundation

/// Runs async work for synchronous callers on threads of its own.
///
/// The seam of the core (``EStargzCore/RandomAccessSource``) is synchronous, the network is
/// not. Blocking a thread of Swift's cooperative pool while the awaited work needs that pool
/// can deadlock (the pool is as wide as the machine has cores), so the bridged tasks prefer
/// this executor.
public final class BlockingBridge: TaskExecutor, @unchecked Sendable {
    /// The one bridge; its jobs run on Dispatch's overcommitting pool.
    public static let shared = BlockingBridge()

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        // A new serial queue per job: serial queues draw on Dispatch's overcommitting pool, which
        // starts a thread whenever the others are blocked (concurrent queues are capped at the
        // core count on Linux and add threads only slowly, which stalled many blocked readers).
        DispatchQueue(label: "estargz.remote.bridge").async { unowned.runSynchronously(on: executor) }
    }

    /// Runs `operation` and blocks the calling thread until it finishes.
    /// Never call from an event-loop thread (the awaited I/O could need it).
    public static func wait<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task(executorPreference: shared) {
            do { box.result = .success(try await operation()) } catch { box.result = .failure(error) }
            done.signal()
        }
        done.wait()
        return try box.result!.get()
    }
}

/// Written by one task before a semaphore signal, read after the wait: the semaphore orders them.
private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}
