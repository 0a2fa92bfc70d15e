/// A file, directory or other node of a layer as a reader sees it: a view of one node of
/// the reader's table, with its cleaned path, its stable number and its link count.
/// Creating one costs nothing; fields are read from the table when asked for.
///
/// A hardlink name resolves to the entry it links to (same `id`, shared `linkCount`),
/// as in the reference reader.
public struct LayerEntry: Sendable {
    /// Stable number of the node within its layer (0 is the root); usable as an inode basis.
    public let id: Int
    let table: NodeTable

    init(id: Int, table: NodeTable) {
        self.id = id
        self.table = table
    }

    @inline(__always)
    private var record: NodeRecord { table.records[id] }

    /// Cleaned path relative to the layer root ("" is the root).
    public var path: String { table.path(id) }
    /// The TOC entry (for hardlinks, the entry linked to), rebuilt from the table on each call.
    /// Its `name` is as stored in the TOC; implicit directories get mode 0755.
    public var tocEntry: TOCEntry { table.tocEntry(id) }
    /// Number of names referring to this node (directories: 2 + subdirectories).
    public var linkCount: Int { Int(record.linkCount) }

    public var kind: TOCEntry.Kind { record.kind }
    public var size: Int64 { record.kind == .regular ? record.size : 0 }
    public var mode: Int64 {
        let r = record
        return r.flags & NodeRecord.hasExtras != 0 ? (table.extras[UInt32(id)]?.mode ?? Int64(r.mode)) : Int64(r.mode)
    }
    public var uid: Int {
        let r = record
        return r.flags & NodeRecord.hasExtras != 0 ? (table.extras[UInt32(id)]?.uid ?? Int(r.uid)) : Int(r.uid)
    }
    public var gid: Int {
        let r = record
        return r.flags & NodeRecord.hasExtras != 0 ? (table.extras[UInt32(id)]?.gid ?? Int(r.gid)) : Int(r.gid)
    }
    public var linkName: String { table.string(record.link) }
    public var xattrs: [String: [UInt8]] { extras?.xattrs ?? [:] }
    /// Device numbers of a character or block device (0 otherwise).
    public var deviceMajor: Int { extras?.devMajor ?? 0 }
    public var deviceMinor: Int { extras?.devMinor ?? 0 }
    /// Modification time in seconds since the epoch (0 when the TOC has none or it is unparsable).
    public var modificationTime: Int64 { table.modificationTime(id) }
    /// The modification time as the TOC wrote it (RFC 3339), or "".
    public var modificationTimeText: String { table.string(record.modTime) }
    /// `sha256:…` of a regular file's whole content as the TOC wrote it, or "".
    public var digest: String {
        let r = record
        if r.digest != 0 { return table.digests[Int(r.digest - 1)].description }
        return extras?.rawDigest ?? ""
    }

    private var extras: NodeExtras? {
        record.flags & NodeRecord.hasExtras != 0 ? table.extras[UInt32(id)] : nil
    }
}

/// The reference's landmark files: they mark the end of the prioritized region and are
/// not part of the layer's file tree for extraction.
public enum Landmark {
    /// Ends the prioritized (prefetch) region of a layer built with prioritized files.
    public static let prefetch = ".prefetch.landmark"
    /// Put first in a layer built without prioritized files.
    public static let noPrefetch = ".no.prefetch.landmark"
    /// The landmark file's one byte of content.
    static let contents: [UInt8] = [0x0f]

    static func isLandmark(_ cleanedPath: String) -> Bool {
        cleanedPath == prefetch || cleanedPath == noPrefetch
    }
}

/// RFC 3339 at second precision in UTC, the only form eStargz TOCs use (`2006-01-02T15:04:05Z`),
/// plus numeric offsets and fractions when reading.
enum RFC3339 {
    static func format(seconds: Int64) -> String {
        let days = floorDiv(seconds, 86_400)
        let secondOfDay = seconds - days * 86_400
        let (y, m, d) = civil(fromDays: days)
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2))Z"
    }

    static func seconds(_ text: String) -> Int64? {
        var text = text
        return text.withUTF8 { seconds($0) }
    }

    static func seconds(_ b: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard b.count >= 20 else { return nil }
        func num(_ r: Range<Int>) -> Int64? {
            var v: Int64 = 0
            for i in r {
                guard b[i] >= 48, b[i] <= 57 else { return nil }
                v = v * 10 + Int64(b[i] - 48)
            }
            return v
        }
        guard let y = num(0 ..< 4), b[4] == 45, let mo = num(5 ..< 7), b[7] == 45, let d = num(8 ..< 10),
              b[10] == 84 || b[10] == 116, let h = num(11 ..< 13), b[13] == 58, let mi = num(14 ..< 16), b[16] == 58,
              let s = num(17 ..< 19), (1 ... 12).contains(mo), (1 ... 31).contains(d)
        else { return nil }
        var i = 19
        if i < b.count, b[i] == 46 {  // fraction: ignored (seconds precision)
            i += 1
            while i < b.count, b[i] >= 48, b[i] <= 57 { i += 1 }
        }
        var offset: Int64 = 0
        guard i < b.count else { return nil }
        if b[i] == 90 || b[i] == 122 {
            i += 1
        } else if b[i] == 43 || b[i] == 45, i + 6 == b.count, let oh = num(i + 1 ..< i + 3), b[i + 3] == 58, let om = num(i + 4 ..< i + 6) {
            offset = (oh * 3600 + om * 60) * (b[i] == 43 ? 1 : -1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        return days(fromCivil: y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset
    }

    private static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }

    // Howard Hinnant's days_from_civil / civil_from_days.
    private static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = floorDiv(y, 400)
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    private static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = floorDiv(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
