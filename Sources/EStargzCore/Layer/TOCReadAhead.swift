import Dispatch
import Synchronization

/// Runs the streaming TOC path's producer (read the member, inflate it, hash the JSON) on a
/// second thread, a few windows ahead of the parser: on two cores the parser no longer waits for
/// inflate and SHA-256, and memory stays bounded by the slots (3 × 256 KiB).
///
/// The producer fills slots in order; ``read(into:)`` (the parser's fill) hands them out in the
/// same order, so the parser sees exactly the bytes, the end and the error it would have seen
/// calling `fill` itself: the bytes before a failure first, then the failure, every time after.
/// ``finish()`` stops and joins the producer; it must be called before anything `fill` uses is
/// read or freed (the hasher's digest, the source), also on error paths.
final class TOCReadAhead: @unchecked Sendable {
    // Each slot belongs to one thread at a time: the producer from `free.wait()` until it
    // signals `filled`, the consumer from `filled.wait()` until it signals `free`. The
    // semaphores order every access, so the slots and the producer's state need no lock.
    private final class Slot {
        var bytes: [UInt8]
        var count = 0
        var failure: EStargzError?
        var isLast = false
        init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }
    }

    private let slots: [Slot]
    private let fill: TOCStreamParser.Fill
    // Created at 0 and raised by signals: libdispatch refuses to free a semaphore whose count is
    // below its initial value, which a stopped pipeline may leave behind.
    private let free = DispatchSemaphore(value: 0)
    private let filled = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let cancelled = Atomic<Bool>(false)
    private var joined = false

    // Consumer state.
    private var current: Slot?
    private var consumed = 0
    private var next = 0
    private var ended = false
    private var failure: EStargzError?

    /// Starts calling `fill` on another thread into `slotCount` slots of `slotSize` bytes.
    init(slotCount: Int = 3, slotSize: Int = 256 << 10, fill: @escaping TOCStreamParser.Fill) {
        slots = (0 ..< slotCount).map { _ in Slot(size: slotSize) }
        self.fill = fill
        for _ in slots { free.signal() }
        DispatchQueue.global().async { [self] in produce() }
    }

    deinit { assert(joined, "TOCReadAhead.finish() was not called") }

    private func produce() {
        var index = 0
        while true {
            free.wait()
            if cancelled.load(ordering: .acquiring) { break }
            let slot = slots[index % slots.count]
            var n = 0
            var failure: EStargzError?
            slot.bytes.withUnsafeMutableBytes { buffer in
                while n < buffer.count {
                    let got: Int
                    do throws(EStargzError) {
                        got = try fill(UnsafeMutableRawBufferPointer(rebasing: buffer[n...]))
                    } catch {
                        failure = error
                        break
                    }
                    if got == 0 { break }
                    n += got
                }
            }
            slot.count = n
            slot.failure = failure
            slot.isLast = failure != nil || n < slot.bytes.count
            filled.signal()
            if slot.isLast { break }
            index += 1
        }
        stopped.signal()
    }

    /// The next JSON bytes into `buffer` (a ``TOCStreamParser/Fill``); 0 at the end.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(EStargzError) -> Int {
        while true {
            if let failure { throw failure }
            if ended { return 0 }
            guard let slot = current else {
                filled.wait()
                current = slots[next % slots.count]
                consumed = 0
                continue
            }
            if consumed < slot.count {
                let n = min(buffer.count, slot.count - consumed)
                slot.bytes.withUnsafeBytes { bytes in
                    buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[consumed ..< consumed + n]))
                }
                consumed += n
                return n
            }
            if let error = slot.failure {
                failure = error
                throw error
            }
            current = nil
            next += 1
            if slot.isLast {
                ended = true
                return 0
            }
            free.signal()
        }
    }

    /// Stops the producer (after the slot it is filling, if any) and waits until it has returned.
    func finish() {
        guard !joined else { return }
        cancelled.store(true, ordering: .releasing)
        for _ in slots { free.signal() }
        stopped.wait()
        joined = true
    }
}
