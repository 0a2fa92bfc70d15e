import EStargzCore
import Synchronization

/// Verified chunks in memory, least recently used evicted first, bounded in bytes.
///
/// Chunks in memory cannot change after ``EStargzCore/LayerReader`` verified them, so hits are
/// served without hashing again.
public final class MemoryChunkCache: ChunkCache {
    /// Most bytes held at once.
    public let capacity: Int
    private let state: Mutex<State>

    private struct State {
        var entries: [SHA256Digest: (bytes: [UInt8], tick: UInt64)] = [:]
        var bytes = 0
        var tick: UInt64 = 0
        var hits: Int64 = 0
        var misses: Int64 = 0
    }

    /// A cache of at most `capacity` bytes (64 MiB by default).
    public init(capacity: Int = 64 << 20) {
        self.capacity = capacity
        self.state = Mutex(State())
    }

    /// Hits and misses so far.
    public var counts: (hits: Int64, misses: Int64) { state.withLock { ($0.hits, $0.misses) } }
    /// Bytes held now.
    public var bytesHeld: Int { state.withLock { $0.bytes } }

    public func lookup(_ digest: SHA256Digest, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        state.withLock { state in
            guard let entry = state.entries[digest], entry.bytes.count == buffer.count else {
                state.misses += 1
                return false
            }
            state.tick += 1
            state.entries[digest]!.tick = state.tick
            state.hits += 1
            entry.bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return true
        }
    }

    public func store(_ digest: SHA256Digest, _ bytes: UnsafeRawBufferPointer) {
        guard bytes.count <= capacity else { return }
        let copy = [UInt8](bytes)
        state.withLock { state in
            if state.entries[digest] != nil { return }
            state.tick += 1
            state.entries[digest] = (copy, state.tick)
            state.bytes += copy.count
            guard state.bytes > capacity else { return }
            // Evict down to 90% so a full cache does not sort on every store.
            let target = capacity * 9 / 10
            for (key, entry) in state.entries.sorted(by: { $0.value.tick < $1.value.tick }) {
                guard state.bytes > target else { break }
                state.entries[key] = nil
                state.bytes -= entry.bytes.count
            }
        }
    }
}
