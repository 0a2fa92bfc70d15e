/// Seconds and nanoseconds since the epoch.
///
/// Always normalized so that `0 <= nanoseconds < 1_000_000_000`; a time before the
/// epoch such as -1.5 s is `seconds: -2, nanoseconds: 500_000_000`, which is how
/// Go's `time.Unix` and PAX's "-1.5" agree on the same instant.
public struct TarTimestamp: Sendable, Equatable, Hashable {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before it).
    public var seconds: Int64
    /// Nanoseconds added to `seconds`, in `0 ..< 1_000_000_000`.
    public var nanoseconds: Int32

    /// A timestamp; nanoseconds outside `0 ..< 1e9` are carried into `seconds`.
    public init(seconds: Int64, nanoseconds: Int32 = 0) {
        var seconds = seconds
        var nanos = Int64(nanoseconds)
        seconds += nanos / 1_000_000_000
        nanos %= 1_000_000_000
        if nanos < 0 {
            nanos += 1_000_000_000
            seconds -= 1
        }
        self.seconds = seconds
        self.nanoseconds = Int32(nanos)
    }
}

/// One tar entry's metadata, independent of how it was encoded (ustar, GNU, PAX).
///
/// Extension records are already folded in: a PAX `path` or GNU long name is in
/// `name`, PAX `uid`/`size`/`mtime` replace the ustar fields, and so on.
public struct TarHeader: Sendable, Equatable {
    /// What the entry is. Types the reader does not support (GNU sparse files,
    /// multi-volume continuations, ...) are refused rather than modelled.
    public enum Kind: Sendable, Equatable {
        /// A regular file (typeflag `'0'`, `'\0'` or `'7'` contiguous).
        case regular
        /// A hard link to `linkName` (typeflag `'1'`).
        case hardlink
        /// A symbolic link whose target is `linkName` (typeflag `'2'`).
        case symlink
        /// A character device `devMajor`:`devMinor` (typeflag `'3'`).
        case characterDevice
        /// A block device `devMajor`:`devMinor` (typeflag `'4'`).
        case blockDevice
        /// A directory (typeflag `'5'`, or a regular-file typeflag with a name ending in `/`).
        case directory
        /// A named pipe (typeflag `'6'`).
        case fifo
    }

    /// The entry's name as stored in the archive (not cleaned; see ``TarPath``).
    public var name: String
    /// What kind of entry this is.
    public var kind: Kind
    /// The mode field as stored: permission bits plus setuid, setgid and sticky.
    public var mode: Int64
    /// Owner user id.
    public var uid: Int
    /// Owner group id.
    public var gid: Int
    /// Owner user name (empty when the archive has none).
    public var userName: String
    /// Owner group name (empty when the archive has none).
    public var groupName: String
    /// Content size in bytes; always 0 for anything but ``Kind/regular``.
    public var size: Int64
    /// Last modification time.
    public var modificationTime: TarTimestamp
    /// Last access time, when the archive records one (PAX `atime` or the GNU header field).
    public var accessTime: TarTimestamp?
    /// Last status change time, when the archive records one (PAX `ctime` or the GNU header field).
    public var changeTime: TarTimestamp?
    /// Target of a hard or symbolic link (empty otherwise).
    public var linkName: String
    /// Device major number (character and block devices).
    public var devMajor: Int
    /// Device minor number (character and block devices).
    public var devMinor: Int
    /// Extended attributes from `SCHILY.xattr.NAME` PAX records, keyed by NAME.
    /// Values are raw bytes because binary values (e.g. `security.capability`) must survive.
    public var xattrs: [String: [UInt8]]
    /// PAX records not mapped to a field above, kept so they can be written back.
    public var paxRecords: [String: [UInt8]]

    /// A header with the given name, kind, size and mode; every other field zero or empty.
    public init(name: String, kind: Kind, size: Int64 = 0, mode: Int64 = 0o644) {
        self.name = name
        self.kind = kind
        self.mode = mode
        self.uid = 0
        self.gid = 0
        self.userName = ""
        self.groupName = ""
        self.size = size
        self.modificationTime = TarTimestamp(seconds: 0)
        self.accessTime = nil
        self.changeTime = nil
        self.linkName = ""
        self.devMajor = 0
        self.devMinor = 0
        self.xattrs = [:]
        self.paxRecords = [:]
    }
}

/// The ustar header block, the unit every tar entry starts with. Both the reader
/// and the writer use these offsets; they are written down once, here.
///
/// ```
/// offset size  field        notes
///      0  100  name         NUL-terminated unless exactly 100 bytes
///    100    8  mode         octal
///    108    8  uid          octal, or base-256 when byte 0 has bit 7 set
///    116    8  gid          "
///    124   12  size         "
///    136   12  mtime        " (seconds)
///    148    8  chksum       octal sum of all 512 bytes, this field counted as spaces
///    156    1  typeflag
///    157  100  linkname
///    257    6  magic        "ustar\0" (POSIX) or "ustar " (GNU); absent in v7
///    263    2  version      "00" (POSIX) or " \0" (GNU)
///    265   32  uname
///    297   32  gname
///    329    8  devmajor
///    337    8  devminor
///    345  155  prefix       POSIX: joined to name with "/"; star: 131 bytes + atime/ctime
///    345   12  atime        GNU only (its header has no prefix)
///    357   12  ctime        GNU only
///    500   12  (pad)        star puts "tar\0" at 508
/// ```
enum TarBlock {
    static let size = 512
    static let name = 0 ..< 100
    static let mode = 100 ..< 108
    static let uid = 108 ..< 116
    static let gid = 116 ..< 124
    static let sizeField = 124 ..< 136
    static let mtime = 136 ..< 148
    static let checksum = 148 ..< 156
    static let typeflag = 156
    static let linkName = 157 ..< 257
    static let magic = 257 ..< 263
    static let version = 263 ..< 265
    static let userName = 265 ..< 297
    static let groupName = 297 ..< 329
    static let devMajor = 329 ..< 337
    static let devMinor = 337 ..< 345
    static let prefix = 345 ..< 500
    static let starPrefix = 345 ..< 476
    static let gnuAccessTime = 345 ..< 357
    static let gnuChangeTime = 357 ..< 369
    static let starTrailer = 508 ..< 512

    static let ustarMagic: [UInt8] = Array("ustar\0".utf8)
    static let ustarVersion: [UInt8] = Array("00".utf8)
    static let gnuMagic: [UInt8] = Array("ustar ".utf8)
    static let gnuVersion: [UInt8] = [0x20, 0x00]
    static let starTrailerMagic: [UInt8] = Array("tar\0".utf8)

    /// Largest value a field of `width` bytes holds in octal (width-1 digits and a NUL).
    static func maxOctal(width: Int) -> Int64 {
        (Int64(1) << (3 * Int64(width - 1))) - 1
    }

    /// The typeflag bytes this package knows about.
    enum TypeFlag {
        static let regular = UInt8(ascii: "0")
        static let regularOld: UInt8 = 0
        static let hardlink = UInt8(ascii: "1")
        static let symlink = UInt8(ascii: "2")
        static let characterDevice = UInt8(ascii: "3")
        static let blockDevice = UInt8(ascii: "4")
        static let directory = UInt8(ascii: "5")
        static let fifo = UInt8(ascii: "6")
        static let contiguous = UInt8(ascii: "7")
        static let paxLocal = UInt8(ascii: "x")
        static let paxGlobal = UInt8(ascii: "g")
        static let gnuLongName = UInt8(ascii: "L")
        static let gnuLongLink = UInt8(ascii: "K")
        static let gnuVolumeLabel = UInt8(ascii: "V")
    }
}

extension TarHeader.Kind {
    /// The typeflag written for this kind.
    var typeflag: UInt8 {
        switch self {
        case .regular: return TarBlock.TypeFlag.regular
        case .hardlink: return TarBlock.TypeFlag.hardlink
        case .symlink: return TarBlock.TypeFlag.symlink
        case .characterDevice: return TarBlock.TypeFlag.characterDevice
        case .blockDevice: return TarBlock.TypeFlag.blockDevice
        case .directory: return TarBlock.TypeFlag.directory
        case .fifo: return TarBlock.TypeFlag.fifo
        }
    }
}
