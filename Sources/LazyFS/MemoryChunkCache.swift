import EStargzCore
import Synchronization

/// Verified chunks kept in memory, least recently used first out, bounded in bytes. A mount
/// gives its readers one, so the kernel's many small reads of one file inflate each chunk once.
public final class MemoryChunkCache: ChunkCache {
    private struct State {
        var chunks: [SHA256Digest: (bytes: [UInt8], lastUse: UInt64)] = [:]
        var bytes = 0
        var clock: UInt64 = 0
    }

    /// Upper bound of the bytes held.
    public let capacity: Int
    private let state = Mutex(State())

    /// A cache holding at most `capacity` bytes of chunks.
    public init(capacity: Int) {
        self.capacity = capacity
    }

    /// Bytes currently held.
    public var bytes: Int { state.withLock { $0.bytes } }

    public func lookup(_ digest: SHA256Digest, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard let bytes = take(digest), bytes.count == buffer.count else { return false }
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        return true
    }

    /// Copies `buffer.count` bytes of a cached chunk starting at `offset`, without the whole-chunk
    /// copy ``lookup(_:into:)`` makes; false when the chunk is not cached (or the range is outside it).
    public func copy(_ digest: SHA256Digest, from offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard let bytes = take(digest), offset >= 0, offset + buffer.count <= bytes.count else { return false }
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset ..< offset + buffer.count])) }
        return true
    }

    /// The chunk's bytes, marked as just used. Arrays are immutable values, so the copy out of
    /// them happens after the lock is released and readers of different chunks do not queue.
    private func take(_ digest: SHA256Digest) -> [UInt8]? {
        state.withLock { state in
            guard let found = state.chunks[digest] else { return nil }
            state.clock += 1
            state.chunks[digest]!.lastUse = state.clock
            return found.bytes
        }
    }

    public func store(_ digest: SHA256Digest, _ bytes: UnsafeRawBufferPointer) {
        guard bytes.count <= capacity / 2 else { return }  // one huge chunk should not flush everything
        let copy = [UInt8](bytes)
        state.withLock { state in
            guard state.chunks[digest] == nil else { return }
            state.clock += 1
            state.chunks[digest] = (copy, state.clock)
            state.bytes += copy.count
            guard state.bytes > capacity else { return }
            // Evict down to 3/4 in one sorted pass, so the cost is amortized over many stores.
            for (key, value) in state.chunks.sorted(by: { $0.value.lastUse < $1.value.lastUse }) {
                guard state.bytes > capacity / 4 * 3 else { break }
                state.chunks[key] = nil
                state.bytes -= value.bytes.count
            }
        }
    }
}
