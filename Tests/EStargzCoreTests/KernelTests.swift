import CStargzKernel
import Foundation
import Testing

@testable import EStargzCore

/// Deterministic test data: text-like lines with some variety, compressible but not trivial.
private func sampleBytes(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(count + 64)
    var x = seed &* 0x9E37_79B9_7F4A_7C15
    var line = 0
    while out.count < count {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        out += Array("line \(line) value \(x % 100_000) \(x & 1 == 0 ? "alpha" : "beta")\n".utf8)
        if line % 7 == 0 { for i in 0..<16 { out.append(UInt8(truncatingIfNeeded: x >> (i * 4))) } }
        line += 1
    }
    return Array(out.prefix(count))
}

private func gzip(_ bytes: [UInt8], level: Int = 9) throws -> [UInt8] {
    try bytes.withUnsafeBytes { try Kernel.compressGzipMember($0, level: level) }
}

/// Inflates `member` into a fresh buffer of `count` bytes.
private func inflate(_ member: [UInt8], count: Int, expecting: SHA256Digest? = nil) throws -> ([UInt8], SHA256Digest) {
    var out = [UInt8](repeating: 0xAA, count: count)
    let digest = try member.withUnsafeBytes { src in
        try out.withUnsafeMutableBytes { dst in try Kernel.inflateChunk(src, into: dst, expecting: expecting) }
    }
    return (out, digest)
}

/// The `KernelError` thrown by `body`, or nil if it succeeds (other errors fail the test).
private func kernelError(_ body: () throws -> Void) -> KernelError? {
    do { try body() } catch let error as KernelError { return error } catch { Issue.record("unexpected error \(error)") }
    return nil
}

/// Bitwise CRC-32 (IEEE), for building gzip headers with FHCRC.
private func crc32(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
    }
    return ~c
}

/// A gzip member made by Python's gzip module (zlib, level 9) with FNAME "hello.txt";
/// content: 600 lines "line <i>: the quick brown fox jumps over the lazy dog <i*i % 997>\n".
private let zlibMemberBase64 = [
        "H4sICAAAAAAC/2hlbGxvLnR4dACdnUm2ZTkNRfuM4g/hWoULZkMRQEKSAQlJNXoSwuf89r7tt7R8bcsqtmW977/74cvH88uPv//h",
        "y8dff/ruN3/6+PWPX//5w8fvvv7r448//fkvf/v4+o8vP/7/5+9/9Z9/f/z26+8/nl98/z+pwaTGN6lgUvVNKpnU+SZV8AvnN7Fm",
        "YtHfxCYTyzvaggty57aZ2LwLeZjYvrs2oIqMR0pCtSQ0IlSUUXeGI+mu3xUdVF3O3cFBFUYaMybVNI0IlSa25gjVJkOreqh267xD",
        "zSlpTkDNqdKI1MTsO8eAmtNxVzWg5vS6+xhQc6Y0J6DmTI8INWd5jlBzlleVmhztY0LNOdKchJpzpKsJNSfWlaPuKa4ctTh9NyOx",
        "xdlXkFqcoxGh3uTSHDc9xlrUQ0/jVbiCejOfvIJQb6ZUvKDerHnnWFBxdt9VLag5JxUSQc3JezRqUj+uL6WualwTV9RVjXv861CP",
        "c3ejoeL0o4CRKo5HpIqjOTZVHK1qU8XRPjZVnHs2mipO6Uup4vS1cU0VZ93z31Rxzt2NiS3OPY0TKs5KjRjUcNw5Tuqq1l3VSX3V",
        "I0Hqq/IejokTKo246Dm+Rm7SpEo53ISas6Ryi8Y44x7HBTVHmcOiaZUCgJX0/F8DsIqeqrsbiwbHdQ/HgoqzPCJUnOM5bno4tI2H",
        "Gjml/zStGvdwbKo4SyNSX1V3jpuaHHnHXfRUXTlqceoejj3pompEanHkOTbNqub1jvtQVb27cSjJUVh9oOLkcz/14Hz8qupJmuRe",
        "q3qg4ux5t+M0zTmuHE2rSl9K6Z88zsGu6tq4Q9NxpY7jeagCSHDQCMDUkaqOos7xUN1RgjQeqjyyHuOh2uOVpepjZPlQ/dkhSapA",
        "Z0mSmp6hTcEUWdo+KEbO1tdSjtzb5JrmWDJ4g5LktCD1XNNLS13X8ZiYCEptKUw+MyVJwx4hmoFxsvzeCEx3PGbQnFlqS4nyWNpP",
        "ipTr896Ehs1LCk+h8vkcc9F56nhSrFzp/Tx0P2U0MVguaTwly6F0bVC0XEvnk8LlpTRoYLxsQWqGlpcWqlC3x1w0LtHxTJx8SW0p",
        "Yk7BkIEZs/0RhcwnPSa9nfDdHcXM/fhKlKZgvhOloHl7mhT7WPkoap66oxiFPZm3k3oyS2LaPH3dPGh64zEp/VFGNShwLh8VSpzX",
        "luWjyNkRKmXO9fhjcTAkW4Kps7SWUud0EQDGzvYplDsfH2sKnlP3B4OS56mLwEHR83EURdlzPp4nvWBPfy2FiI6/KH5Oqy3lz1OX",
        "LAMDaN15Dkqg03kDZdBz6ZBRCD10yCiEThtbSqHX8NJSFfLH0qTeZ4xy6OU4nILoYX3HJNq2hKLo7SBq41BIfozC6HZcQmn0aSkC",
        "5dEZnidWIX8tdWQ61hvXa7i0DJNFKQJl0mHDR6F0OwmkVPo4WKRYOkWXB+XSyy6Qgunh8IKi6Ta2pWz6+JAdXGUoA0/p9NK1Vjz4",
        "XkN1hhRPd7i0EYMh1cRRPJ3CHkHx9JImBMXTP+cZkqQ6NP21OBhSgeOD4+mUJK5xdsUptUPeFcqnp+oxgvJpZbsxcFIv5Ru4eEyK",
        "QPl0Tk8T38n7a2kdUHo76RWHLleD8ukh9B+UT7dKCILy6bM9Jr4lc6U0veJwGTHl0xmWpAG1TQLl0+HaZcqnp67JgvLpIfoalE+3",
        "8EVQPq2akEjsyfSxFE8fXY4ExdNlr0Lx9LGvp3w6j+c5KTrz19IC6PR2buqPpHyUT4cKy4Py6aUUOyifDqU5gaugRbaD8umwMcF8",
        "ekhvKZ8Om/jCSZm/ll6Tfe4ndWVb2kcB9bAkBdRz+1ULffTl80kB9XTURwF16BYoMKBW9hmNn2F4njQcssvGZdHl/cS1ZtI+iqjD",
        "7pMi6u1dmRgv+mkUrY3W9W5QRJ0OhzCiVkFDUERd6XnS6/rpr8UF0t5PSoek8JRQt8hkUEI9BH2DEuopUBOUUMfj53X0tt7hEEbU",
        "PioUUe/2PPFFmbIVXCrd3k+oQi2gHpRRO3GgiHqqjDA29mSyJbhc2pEmRdT5+USTli46MqGIuqbnSVVIpoQS6mk9oIh6OEjY+J2G",
        "TgpF1KnS4Di44ENfSxF12/JRRD1Uch8UUU9zGoqow+EiRdTbvgGXTy+vLQ2GdDopoZ46KUkJdUj5khLqvfyEGped6fXtg5+mShBr",
        "kF4KP/i2Xt1BKKA+w19LQ6H00mIypKfUFFAvBW5JAXXq9jJ5Hw4J0oxM8WlSQB2CxTmwH/PLf/yAw/Ok71Tbm0KvWnUHmRRQlxsO",
        "UECtCrCkfHopss3AJfjaFFw/LX+dgWuG3MmhKDqzJK06K8+TXpPJd2bgt84ek1YuCmMl5tO6HUnKp+OzTwZ1ZLZfFFB3a20Tw0WZ",
        "BAqotw82BdTtDiS4QYfNLQXU5/Ha0oxMkVtiQG1PVrgGX/PEXTqUHiUF1OkogQJq2a/CsZDONe7Tsd1ThqJFbwn1Y9MLS/2Y3RGm",
        "05akdHpb9Rq/gNamNO4P5DHpG2g1XsvGKmRJmtOLSSbu2TG8K/QVR3ptqREStU1Mp52RTVz8qnnixh1DuzLxZb3HxI3tZL4mjqdl",
        "TCZuUCa3i7t3tHcFd2GQIL1otWfAdNqmj9LptCLgDh7azYUrhrSyFE63njbnwuG0JakV8sfiiiHvCc3pP5cW95ySycRsWoKUTe90",
        "YzWqQN4TyqZzekxqg2zfOZuW3aNsevpwYjZd3hXctcxj0oTM5ovDaUlSON1mF7iph5NdCqdHeEwaC9lk4vrpx5LUChlB4NYejhEO",
        "joUkSP2Y3tolhtOSLAqnS20SCnf3cNdEXD7tISmbVrODwtXTjyVpSq+YuCicTvdcpHB6lMfED1rVrhHDaSWeNXAXPCkChdOlp2RF",
        "6XS0x6Q65GniUg+13qRweolmFoXTravvonC6hsfctNDI86QF+BKkcPpYDyicXnrNUxROz+ExaeWrCETh4ulhSfqGY/prcfG0BKkb",
        "s+7hltG6+S5eOy1JyqZLsX9RNp0K+Yqy6bE9Jk3IPE3cxlW+k6LpJRZQFE1P6ztF010eE9+QeZ70Wb26hxdF08OuAaNpLRAl08e2",
        "FneQFk4qXDodlqQJmU8KZdOt/LoonC57XdxH+vE8cZcqSTb+uwy356b39FogyqaPfQruJe1G67hyOi2Je7v6a/FbRJ3rxsVCHhO/",
        "RfQ8qRVSr7ya+C2ivpay6eEVwpXTHpJiIc+S+jGHxJRMbxG3omR6+1hP/KjeY+L3G54nTen1OrkWbjCkr8Vo2itE2XQ5oqFsuh7P",
        "E3dbtCQuOPPX4n/u8QphsugxacHZ8jxxcw9JUjrtOJy3mZYgzeg9Ir5iVWrEO3tYktYKCYcXRdPHsISi6W1SR9H0/pwnzej1tK8o",
        "mt4O4Cma3l6hgy/IPCZ9vWF+itG0E3OKppfdNUXTy/CLounVHpPm9OV5npeSTdm0v7Ypm/YK9RMvd6UpnLYmNIbTy5L9UuP7mS9P",
        "WT/r5cluCqdtTRq39vB/wlA4bavZFE7bUjeF0/YOTeH0+ZxnvfSCjXtP619zOJyW4HoXXDRF045nGjf2UAzVlE07busYL2PFpmza",
        "8WlTNu2YuHHj6ceS/TL2b1w4/fn/WetljtMUTjuvat54WpIUTjt/bFw47RWicNp5cuN/NSzPs97hgKZwWgCiKZs28+hcLzlL537J",
        "dhqzafGkpmzaDKtrvORmTeG0WV1TOG0+2BROm0k2hdPmoI3/4lAHBbf1EO1tyqZNmLvOS6rd/bwk6Y0Lp71CuK3H8Jj58paiKZz2",
        "zUjjvtPlr53vLoCasmnfOTVm07rnavx3hw7g5/PyPq/neHmH2DNe3ls2/svDz3nWu+vZpnDaN8KNy6Z9Uiic9s13Uzjt2/bG/3uo",
        "G/6mcNpVBU3htP/AFP/1oRNz/N+H9in4zw+t7/jfD4e/dr6shWnc1CM85n5X8tP4DxBta/k/ICo85Wxausf/A9Fj5suqscaF09pN",
        "/DeIhl+8p4f/ene9rAFs/E+In/M8L2sdG/8XouorG9dNm0Dwph4eM1/Wrjb+P8RjyX5Xotu8bFqKgHt6mNTh/0Q0P8V/iviz5H8B",
        "OQeZlDqHAAA=",
].joined()

private let zlibMemberContent: [UInt8] = Array(
    (0..<600).map { "line \($0): the quick brown fox jumps over the lazy dog \($0 * $0 % 997)\n" }.joined().utf8)

@Suite struct KernelTests {
    // MARK: SHA-256

    @Test func nistVectors() {
        #expect(SHA256Digest.of([]).hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256Digest.of(Array("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256Digest.of(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)).hex
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        #expect(SHA256Digest.of(million).description
            == "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        var h = SHA256Hasher()
        for _ in 0..<1000 { h.update(Array(million.prefix(1000))) }
        #expect(h.finalize() == SHA256Digest.of(million))
    }

    @Test func incrementalMatchesOneShot() {
        let data = sampleBytes(10_000)
        let whole = SHA256Digest.of(data)
        for splits in [[0], [1], [63], [64], [65], [1, 2, 3], [55, 56, 57], [127, 128, 4000], [9_999], [10_000]] {
            var h = SHA256Hasher()
            var start = 0
            for s in splits {
                h.update(Array(data[start..<s]))
                start = s
            }
            h.update(Array(data[start...]))
            #expect(h.finalize() == whole, "splits \(splits)")
        }
        // SHA-NI and the portable fallback agree on every length 0...1100.
        #expect(sgk_sha256_selftest() == SGK_OK.rawValue)
        // finalize restarts the hasher.
        var h = SHA256Hasher()
        h.update(data)
        _ = h.finalize()
        #expect(h.finalize() == SHA256Digest.of([]))
    }

    @Test func digestParseAndFormat() throws {
        let text = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        let d = try #require(SHA256Digest(parsing: text))
        #expect(d.description == text)
        #expect(d == SHA256Digest.of(Array("abc".utf8)))
        #expect(Set([d, SHA256Digest.of(Array("abc".utf8))]).count == 1)
        #expect(SHA256Digest(parsing: text.uppercased()) == nil)
        #expect(SHA256Digest(parsing: "sha256:BA7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == nil)
        #expect(SHA256Digest(parsing: String(text.dropLast())) == nil)
        #expect(SHA256Digest(parsing: text + "0") == nil)
        #expect(SHA256Digest(parsing: "sha512:" + text.dropFirst(7)) == nil)
        #expect(SHA256Digest(parsing: "sha256:" + String(repeating: "g", count: 64)) == nil)
        #expect(SHA256Digest(parsing: "") == nil)
    }

    // MARK: gzip

    @Test(arguments: [1, 6, 9, 12]) func gzipRoundTrip(level: Int) throws {
        let data = sampleBytes(300_000, seed: UInt64(level))
        let member = try gzip(data, level: level)
        #expect(member.count < data.count)
        #expect(Array(member.prefix(4)) == [0x1f, 0x8b, 8, 0])
        #expect(try member.withUnsafeBytes { try Kernel.gzipHeaderLength($0) } == 10)
        let (out, digest) = try inflate(member, count: data.count, expecting: SHA256Digest.of(data))
        #expect(out == data)
        #expect(digest == SHA256Digest.of(data))
        // Streaming decoder agrees (and checks the CRC trailer).
        #expect(try streamDecode(member, inChunk: 4096, outChunk: 8192) == data)
    }

    @Test func emptyMember() throws {
        let member = try gzip([])
        let (out, digest) = try inflate(member, count: 0)
        #expect(out.isEmpty)
        #expect(digest == SHA256Digest.of([]))
    }

    @Test func levelOutOfRangeIsArgumentError() {
        let e = kernelError { _ = try [1, 2, 3].withUnsafeBytes { b in try Kernel.compressGzipMember(b, level: 0) } }
        #expect(e?.status == SGK_ERR_ARGUMENT.rawValue)
    }

    @Test func prefixOfLongerMember() throws {
        // Member content = chunk + tar padding/headers; only the chunk is wanted.
        let data = sampleBytes(200_000)
        let member = try gzip(data)
        for n in [1, 511, 100_000, 199_488, 199_999] {
            let want = Array(data.prefix(n))
            // src is exactly the member (ISIZE-hint path) ...
            let (a, da) = try inflate(member, count: n, expecting: SHA256Digest.of(want))
            #expect(a == want)
            #expect(da == SHA256Digest.of(want))
            // ... and src runs on past the member (libdeflate then zlib fallback path).
            let (b, _) = try inflate(member + [UInt8](repeating: 0x55, count: 1000), count: n, expecting: SHA256Digest.of(want))
            #expect(b == want)
        }
        // A member far larger than the chunk (beyond the scratch slack) goes to zlib.
        let big = sampleBytes(3_000_000, seed: 9)
        let bigMember = try gzip(big, level: 1)
        let (c, _) = try inflate(bigMember, count: 1000)
        #expect(c == Array(big.prefix(1000)))
    }

    @Test func zlibMemberWithFNAME() throws {
        let member = try #require(Data(base64Encoded: zlibMemberBase64).map { [UInt8]($0) })
        #expect(member[3] == 0x08) // FNAME
        #expect(try member.withUnsafeBytes { try Kernel.gzipHeaderLength($0) } == 10 + "hello.txt".utf8.count + 1)
        let (whole, _) = try inflate(member, count: zlibMemberContent.count)
        #expect(whole == zlibMemberContent)
        let (part, _) = try inflate(member, count: 5000, expecting: SHA256Digest.of(Array(zlibMemberContent.prefix(5000))))
        #expect(part == Array(zlibMemberContent.prefix(5000)))
        #expect(try streamDecode(member, inChunk: 7, outChunk: 333) == zlibMemberContent)
    }

    @Test func extraHeaderFields() throws {
        let data = sampleBytes(50_000)
        let plain = try gzip(data)
        // Rebuild the header with FEXTRA + FNAME + FCOMMENT + FHCRC.
        var header: [UInt8] = [0x1f, 0x8b, 8, 0x04 | 0x08 | 0x10 | 0x02, 0, 0, 0, 0, 0, 255]
        header += [6, 0, UInt8(ascii: "S"), UInt8(ascii: "G"), 2, 0, 0xAB, 0xCD] // XLEN 6, one subfield
        header += Array("file.tar".utf8) + [0]
        header += Array("a comment".utf8) + [0]
        let hcrc = crc32(header) // FHCRC: low 16 bits of the header's CRC-32 (zlib checks it)
        header += [UInt8(hcrc & 0xff), UInt8(hcrc >> 8 & 0xff)]
        let member = header + plain.dropFirst(10)
        #expect(try member.withUnsafeBytes { try Kernel.gzipHeaderLength($0) } == header.count)
        let (out, _) = try inflate(member, count: 40_000)
        #expect(out == Array(data.prefix(40_000)))
        #expect(try streamDecode(member, inChunk: 5, outChunk: 1000) == data)
        // Every proper prefix of the header is "truncated", never "format" or success.
        for n in 0..<header.count {
            let e = kernelError { _ = try Array(header.prefix(n)).withUnsafeBytes { b in try Kernel.gzipHeaderLength(b) } }
            #expect(e?.isTruncated == true, "header prefix \(n)")
        }
        let bad = kernelError { _ = try [0x1f, 0x8c, 8].withUnsafeBytes { b in try Kernel.gzipHeaderLength(b) } }
        #expect(bad?.isFormat == true)
    }

    @Test func truncatedSource() throws {
        let data = sampleBytes(100_000)
        let member = try gzip(data)
        // (Cutting only the trailer is not truncation: the bytes asked for were all produced.)
        for cut in [0, 5, 10, 11, member.count / 2, member.count * 3 / 4] {
            let e = kernelError { _ = try inflate(Array(member.prefix(cut)), count: data.count) }
            #expect(e?.isTruncated == true, "cut at \(cut): \(String(describing: e))")
        }
        // Asking for more than the member holds is truncation too.
        let e = kernelError { _ = try inflate(member, count: data.count + 1) }
        #expect(e?.isTruncated == true)
    }

    @Test func flippedByteNeverYieldsWrongBytes() throws {
        let data = sampleBytes(60_000)
        let member = try gzip(data)
        let expected = SHA256Digest.of(data)
        var failures = 0
        for pos in stride(from: 10, to: member.count - 8, by: max(1, member.count / 150)) {
            var bad = member
            bad[pos] ^= 0x20
            do {
                let (out, _) = try inflate(bad, count: data.count, expecting: expected)
                #expect(out == data, "flip at \(pos) accepted with wrong bytes")
            } catch let error as KernelError {
                failures += 1
                #expect(error.isFormat || error.isDigestMismatch || error.isTruncated, "flip at \(pos): \(error)")
            }
        }
        #expect(failures > 0)
    }

    @Test func concurrentChunkInflate() async throws {
        // Per-thread kernel state: many tasks at once must not interfere.
        let data = sampleBytes(400_000, seed: 5)
        let member = try gzip(data, level: 6)
        let ok = await withTaskGroup(of: Bool.self) { group in
            for t in 0..<8 {
                group.addTask {
                    for i in 0..<20 {
                        let n = 1000 + (t * 7919 + i * 104_729) % (data.count - 1000)
                        let want = Array(data.prefix(n))
                        guard let (out, _) = try? inflate(member, count: n, expecting: SHA256Digest.of(want)), out == want
                        else { return false }
                        guard (try? gzip(want, level: 1 + i % 12)).map({ $0.count > 0 }) == true else { return false }
                    }
                    return true
                }
            }
            return await group.reduce(true) { $0 && $1 }
        }
        #expect(ok)
    }

    @Test func digestMismatchReported() throws {
        let data = sampleBytes(10_000)
        let member = try gzip(data)
        let wrong = SHA256Digest.of(Array("something else".utf8))
        let e = kernelError { _ = try inflate(member, count: data.count, expecting: wrong) }
        #expect(e?.isDigestMismatch == true)
        #expect(e?.description.isEmpty == false)
    }

    @Test func garbageIsFormatError() {
        let junk = sampleBytes(1000)
        let e = kernelError { _ = try inflate(junk, count: 100) }
        #expect(e?.isFormat == true)
        // A valid header followed by an invalid block type (BTYPE 11).
        let e2 = kernelError { _ = try inflate([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255, 0x07, 0, 0, 0, 0, 0, 0, 0, 0, 0], count: 10) }
        #expect(e2?.isFormat == true)
    }

    // MARK: streaming

    private func streamDecode(_ input: [UInt8], inChunk: Int, outChunk: Int, ends: UnsafeMutablePointer<Int>? = nil) throws -> [UInt8] {
        let decoder = try GzipStreamDecoder()
        var result = [UInt8]()
        var buf = [UInt8](repeating: 0, count: outChunk)
        var pos = 0
        var memberEnds = 0
        var stalls = 0
        while true {
            let end = min(input.count, pos + inChunk)
            let r = try input[pos..<end].withUnsafeBytes { src in
                try buf.withUnsafeMutableBytes { dst in try decoder.decode(src, into: dst) }
            }
            pos += r.consumed
            result += buf.prefix(r.produced)
            if r.memberEnded { memberEnds += 1 }
            if r.consumed == 0 && r.produced == 0 {
                if pos == input.count { break }
                stalls += 1
                #expect(stalls < 3, "decoder made no progress")
                if stalls >= 3 { break }
            } else {
                stalls = 0
            }
        }
        #expect(decoder.totalOut == UInt64(result.count))
        ends?.pointee = memberEnds
        return result
    }

    @Test func streamingThreeMembers() throws {
        let parts = [sampleBytes(70_000, seed: 1), sampleBytes(1, seed: 2), sampleBytes(123_457, seed: 3)]
        var input = [UInt8]()
        for (i, p) in parts.enumerated() { input += try gzip(p, level: [9, 1, 6][i]) }
        let expected = parts.flatMap { $0 }
        for (inChunk, outChunk) in [(1, 1), (7, 13), (1000, 3), (4093, 65_537), (input.count, expected.count + 10)] {
            var ends = 0
            #expect(try streamDecode(input, inChunk: inChunk, outChunk: outChunk, ends: &ends) == expected,
                    "in \(inChunk) out \(outChunk)")
            if inChunk == 1 { #expect(ends >= 3) } // each member end is seen at a 1-byte boundary
        }
    }

    @Test func streamingReportsMemberEnd() throws {
        let member = try gzip(sampleBytes(5000))
        let decoder = try GzipStreamDecoder()
        var out = [UInt8](repeating: 0, count: 10_000)
        let r = try member.withUnsafeBytes { src in try out.withUnsafeMutableBytes { try decoder.decode(src, into: $0) } }
        #expect(r.consumed == member.count)
        #expect(r.produced == 5000)
        #expect(r.memberEnded)
        // Half a member: not ended.
        let d2 = try GzipStreamDecoder()
        let r2 = try Array(member.prefix(member.count / 2)).withUnsafeBytes { src in
            try out.withUnsafeMutableBytes { try d2.decode(src, into: $0) }
        }
        #expect(!r2.memberEnded)
        // Garbage after a member: the member's bytes are delivered first, then the error.
        let withJunk = member + [0x00, 0x01, 0x02, 0x03, 0x04, 0x05]
        let d4 = try GzipStreamDecoder()
        var got = [UInt8]()
        var pos = 0
        var thrown: KernelError?
        for _ in 0..<10 {
            do {
                let r = try withJunk[pos...].withUnsafeBytes { src in try out.withUnsafeMutableBytes { try d4.decode(src, into: $0) } }
                pos += r.consumed
                got += out.prefix(r.produced)
            } catch let e as KernelError { thrown = e; break }
        }
        #expect(got == sampleBytes(5000))
        #expect(thrown?.isFormat == true)
        // Corrupt trailer CRC is a format error (reported by the call after the one
        // that delivered the member's bytes, with the rest of the input).
        var bad = member
        bad[bad.count - 6] ^= 1
        let d3 = try GzipStreamDecoder()
        let first = try bad.withUnsafeBytes { src in try out.withUnsafeMutableBytes { try d3.decode(src, into: $0) } }
        #expect(!first.memberEnded)
        let e = kernelError {
            _ = try bad[first.consumed...].withUnsafeBytes { src in
                try out.withUnsafeMutableBytes { dst in try d3.decode(src, into: dst) }
            }
        }
        #expect(e?.isFormat == true)
    }

    // MARK: zstd

    @Test func zstdRoundTripAndSizeErrors() throws {
        let data = sampleBytes(500_000)
        let frame = try data.withUnsafeBytes { try Kernel.zstdCompress($0, level: 3) }
        #expect(frame.count < data.count)
        var out = [UInt8](repeating: 0, count: data.count)
        try frame.withUnsafeBytes { src in try out.withUnsafeMutableBytes { try Kernel.zstdDecompress(src, into: $0) } }
        #expect(out == data)

        func decode(_ src: [UInt8], _ n: Int) -> KernelError? {
            var dst = [UInt8](repeating: 0, count: n)
            return kernelError {
                try src.withUnsafeBytes { s in
                    try dst.withUnsafeMutableBytes { d in try Kernel.zstdDecompress(s, into: d) }
                }
            }
        }
        #expect(decode(frame, data.count - 1)?.isSpace == true)
        #expect(decode(frame, data.count + 1)?.isTruncated == true)
        #expect(decode(Array(frame.prefix(frame.count / 2)), data.count)?.isTruncated == true)
        #expect(decode(Array(frame.prefix(frame.count - 1)), data.count) != nil)
        #expect(decode(sampleBytes(100), 10)?.isFormat == true)
        #expect(decode(frame, data.count) == nil)
        // An empty frame into an empty buffer.
        let empty = try [UInt8]().withUnsafeBytes { try Kernel.zstdCompress($0, level: 19) }
        #expect(decode(empty, 0) == nil)
        #expect(decode(empty, 1)?.isTruncated == true)
    }

    // MARK: xxhash and diagnostics

    @Test func xxhashVectors() {
        #expect([UInt8]().withUnsafeBytes { Kernel.xxh64($0) } == 0xEF46_DB37_51D8_E999)
        #expect([UInt8]().withUnsafeBytes { Kernel.xxh3($0) } == 0x2D06_8005_38D3_94C2)
        #expect(Array("abc".utf8).withUnsafeBytes { Kernel.xxh64($0) } == 0x44BC_2CF5_AD77_0999)
        #expect(Array("abc".utf8).withUnsafeBytes { Kernel.xxh64($0, seed: 1) } != 0x44BC_2CF5_AD77_0999)
    }

    @Test func implementationsAreNamed() {
        let i = Kernel.implementations
        #expect(["sha-ni", "portable"].contains(i.sha256))
        #expect(i.inflate.contains("libdeflate"))
        #expect(i.deflate == "libdeflate")
    }
}
