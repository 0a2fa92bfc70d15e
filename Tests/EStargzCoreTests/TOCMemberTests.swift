@testable import EStargzCore
import Testing
import TestSupport

/// The two ways a TOC member is read: inflated whole (libdeflate, up to
/// `Limits.maximumWholeTOCSize`) and streamed. Both must build the same table, and a damaged or
/// lying member must fail the same way on both, since the whole path hands anything it cannot
/// take to the streaming one.
@Suite struct TOCMemberTests {
    /// What opening a blob gave: the digest and every entry in walk order, or the error.
    enum Outcome: Equatable {
        case opened(SHA256Digest, [TOCEntry])
        case failed(EStargzError)
    }

    static func open(_ blob: [UInt8], wholeUpTo limit: Int, digest: SHA256Digest? = nil) -> (Outcome, whole: Bool) {
        var limits = LayerReader.Limits()
        limits.maximumWholeTOCSize = limit
        do {
            let layer = try LayerReader(source: MemorySource(blob), tocDigest: digest, limits: limits)
            var entries: [TOCEntry] = []
            layer.walk { _, entry in entries.append(entry.tocEntry); return true }
            return (.opened(layer.tocDigest, entries), layer.tocWasInflatedWhole)
        } catch let error as EStargzError {
            return (.failed(error), false)
        } catch {
            return (.failed(.invalidTOC("unexpected \(error)")), false)
        }
    }

    /// Blob offsets of the TOC member's trailer: CRC-32 at `end - 8`, ISIZE at `end - 4`.
    static func memberEnd(_ blob: [UInt8]) throws -> Int {
        let layer = try LayerReader(source: MemorySource(blob))
        return blob.count - layer.footerFormat.size
    }

    static func isize(_ blob: [UInt8], at end: Int) -> Int {
        Int(blob[end - 4]) | Int(blob[end - 3]) << 8 | Int(blob[end - 2]) << 16 | Int(blob[end - 1]) << 24
    }

    static func withISIZE(_ blob: [UInt8], at end: Int, _ value: UInt32) -> [UInt8] {
        var b = blob
        for i in 0 ..< 4 { b[end - 4 + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
        return b
    }

    @Test func wholeAndStreamedTOCsBuildTheSameTable() throws {
        let (blob, layer, _) = try NodeTableTests.sample()
        #expect(layer.tocWasInflatedWhole)
        let (whole, wasWhole) = Self.open(blob, wholeUpTo: 16 << 20, digest: layer.tocDigest)
        let (streamed, wasStreamedWhole) = Self.open(blob, wholeUpTo: 0, digest: layer.tocDigest)
        #expect(wasWhole && !wasStreamedWhole)
        #expect(whole == streamed)
        guard case .opened(_, let entries) = whole else {
            Issue.record("\(whole)")
            return
        }
        #expect(entries.count > 12)
    }

    /// The limit is on the tar inside the member (the trailer's ISIZE): at it the member is
    /// inflated whole, one byte below it the member streams, with the same table.
    @Test func thresholdIsTheMembersUncompressedSize() throws {
        let (original, _, _) = try NodeTableTests.sample()
        // A TOC of a few MiB, so the whole path's buffer is far above the streaming window.
        var toc = try storedTOC(original)
        for d in 0 ..< 40 {
            for f in 0 ..< 250 {
                var e = TOCEntry(name: "d\(d)/file-with-a-longer-name-\(f)", type: .regular)
                e.mode = 0o644
                e.modTime = "2024-01-01T00:00:00Z"
                e.digest = SHA256Digest.of([]).description
                toc.entries.append(e)
            }
        }
        let big = try blob(original, withTOC: toc)
        let end = try Self.memberEnd(big)
        let size = Self.isize(big, at: end)
        #expect(size > 1 << 20)
        let (at, atWhole) = Self.open(big, wholeUpTo: size)
        let (below, belowWhole) = Self.open(big, wholeUpTo: size - 1)
        #expect(atWhole && !belowWhole)
        #expect(at == below)
        guard case .opened(_, let entries) = at else {
            Issue.record("\(at)")
            return
        }
        #expect(entries.count >= 10_000)
    }

    /// A damaged trailer, a lying ISIZE (smaller, larger, larger than any TOC, larger than the
    /// member could hold), corrupt data and a short member give on the whole path exactly what
    /// they give when streamed, with and without a trusted digest; none of them allocates more
    /// than the whole-path limit.
    @Test func damagedOrLyingMembersFailAsWhenStreamed() throws {
        let (original, layer, _) = try NodeTableTests.sample()
        let end = try Self.memberEnd(original)
        let size = Self.isize(original, at: end)
        var cases: [(String, [UInt8])] = []
        var b = original
        b[end - 8] ^= 0x01
        cases.append(("CRC-32 flipped", b))
        cases.append(("ISIZE one short", Self.withISIZE(original, at: end, UInt32(size - 1))))
        cases.append(("ISIZE one over", Self.withISIZE(original, at: end, UInt32(size + 1))))
        cases.append(("ISIZE 4 GiB", Self.withISIZE(original, at: end, .max)))
        cases.append(("ISIZE at the limit", Self.withISIZE(original, at: end, 16 << 20)))
        cases.append(("ISIZE below a tar header", Self.withISIZE(original, at: end, 100)))
        b = original
        b[Int(layer.tocOffset) + (end - Int(layer.tocOffset)) / 2] ^= 0x40
        cases.append(("data flipped", b))
        // The member cut short: 16 bytes gone before the footer (the footer still points at it).
        cases.append(("member cut short", Array(original[..<(end - 16)] + original[end...])))
        for (what, broken) in cases {
            for digest in [nil, layer.tocDigest] {
                let (whole, _) = Self.open(broken, wholeUpTo: 16 << 20, digest: digest)
                let (streamed, _) = Self.open(broken, wholeUpTo: 0, digest: digest)
                #expect(whole == streamed, "\(what), digest \(digest != nil)")
            }
        }
        // The intact member at the threshold's both sides for comparison.
        #expect(Self.open(original, wholeUpTo: size).whole && !Self.open(original, wholeUpTo: size - 1).whole)
    }
}
