import EStargzCore

/// Prefetch for a layer read through a ``RangeReader``.
public enum Prefetch {
    /// Fetches everything before the `.prefetch.landmark` in one request and, when the layer
    /// has a chunk cache, inflates and verifies those chunks into it. Returns the bytes of the
    /// region (0 when the layer has no prioritized files).
    @discardableResult
    public static func prioritized(layer: LayerReader, reader: RangeReader) async throws -> Int64 {
        guard let end = layer.prefetchRegionEnd, end > 0 else { return 0 }
        try await reader.fetch(0 ..< end)
        if layer.cache != nil {
            try await warm(layer: layer, chunks: layer.allChunks().filter { $0.chunk.blobEnd <= end })
        }
        return end
    }

    /// Fetches the rest of the layer in the background, `stepSize` bytes per request and at
    /// most `bytesPerSecond`, each request waiting while foreground reads are in flight
    /// (``RangeReader/Priority/background``), so foreground reads keep the bandwidth they need.
    /// Cancel the returned task to stop it.
    public static func background(layer: LayerReader, reader: RangeReader, stepSize: Int64 = 4 << 20,
                                  bytesPerSecond: Int64 = 32 << 20) -> Task<Void, any Error> {
        Task(executorPreference: BlockingBridge.shared) {
            var offset = layer.prefetchRegionEnd ?? 0
            let end = layer.tocOffset
            let clock = ContinuousClock()
            while offset < end {
                try Task.checkCancellation()
                let started = clock.now
                let step = min(stepSize, end - offset)
                try await reader.fetch(offset ..< offset + step, priority: .background)
                if layer.cache != nil {
                    let range = offset ..< offset + step
                    try await warm(layer: layer, chunks: layer.allChunks().filter { range.contains($0.chunk.blobOffset) && $0.chunk.blobEnd <= range.upperBound })
                }
                offset += step
                let budget = Duration.seconds(Double(step) / Double(max(1, bytesPerSecond)))
                let spent = clock.now - started
                if spent < budget { try await Task.sleep(for: budget - spent) }
            }
        }
    }

    /// Reads each chunk through the layer (verifying it and storing it in the cache).
    private static func warm(layer: LayerReader, chunks: [(file: LayerEntry, chunk: ChunkLocation)]) async throws {
        let work = chunks
        try await Task(executorPreference: BlockingBridge.shared) {
            for (file, chunk) in work {
                try Task.checkCancellation()
                var scratch = [UInt8](repeating: 0, count: Int(chunk.size))
                _ = try scratch.withUnsafeMutableBytes { try layer.read(file, into: $0, at: chunk.fileOffset) }
            }
        }.value
    }
}
