/// What the dynamic loader opens after it has read an ELF program's or library's headers: the
/// interpreter (`PT_INTERP`), the libraries it needs (`DT_NEEDED`) and where it looks for them
/// first (`DT_RUNPATH`, or `DT_RPATH` without it).
///
/// Read-ahead uses this to fetch a program's libraries while the loader is still busy with the
/// program, instead of one round trip per library as the loader opens them one after another.
/// Only 64-bit little-endian files are understood (x86-64, AArch64, RISC-V, ppc64le); anything
/// else, or any inconsistency, gives nil: a guess is skipped, never an error.
struct ELFDependencies: Equatable, Sendable {
    /// `PT_INTERP`: the dynamic loader's path (absolute), for programs.
    var interpreter: String?
    /// `DT_NEEDED`, in order.
    var needed: [String]
    /// `DT_RUNPATH` (or `DT_RPATH`), split at `:`, `$ORIGIN` not yet expanded.
    var searchPaths: [String]
    /// `e_machine`, which picks the multiarch library directories.
    var machine: UInt16

    static let headerSize = 64
    private static let programHeaderSize = 56
    private static let maximumProgramHeaders = 256
    private static let maximumDynamicBytes = 64 << 10
    private static let maximumString = 4096

    /// Parses the file's headers through `read(offset, count)`, which returns the bytes (fewer
    /// only at the end of the file) or nil when they cannot be read. `size` is the file's size.
    static func parse(size: Int64, read: (Int64, Int) -> [UInt8]?) -> ELFDependencies? {
        guard let header = read(0, headerSize), header.count == headerSize,
              header[0] == 0x7f, header[1] == 0x45, header[2] == 0x4c, header[3] == 0x46,
              header[4] == 2, header[5] == 1 else { return nil }
        let type = u16(header, 16)
        guard type == 2 || type == 3 else { return nil }  // ET_EXEC, ET_DYN
        let machine = u16(header, 18)
        let tableOffset = i64(header, 32)
        let entrySize = Int(u16(header, 54)), count = Int(u16(header, 56))
        guard entrySize >= programHeaderSize, count > 0, count <= maximumProgramHeaders, tableOffset > 0,
              tableOffset <= size, Int64(entrySize * count) <= size - tableOffset,
              let table = read(tableOffset, entrySize * count), table.count == entrySize * count else { return nil }

        var interpreter: String?
        var dynamic: (offset: Int64, size: Int64)?
        var loads: [(address: UInt64, offset: Int64, size: UInt64)] = []
        for index in 0 ..< count {
            let base = index * entrySize
            let offset = i64(table, base + 8), fileSize = u64(table, base + 32)
            guard offset >= 0, offset <= size, fileSize <= UInt64(size - offset) else { continue }
            switch u32(table, base) {
            case 1:  // PT_LOAD
                loads.append((u64(table, base + 16), offset, fileSize))
            case 2:  // PT_DYNAMIC
                dynamic = (offset, Int64(fileSize))
            case 3:  // PT_INTERP
                if let bytes = read(offset, Int(min(fileSize, UInt64(maximumString)))) { interpreter = cString(bytes) }
            default:
                break
            }
        }

        var needed: [String] = [], searchPaths: [String] = []
        if let dynamic, dynamic.size >= 16, let entries = read(dynamic.offset, Int(min(dynamic.size, Int64(maximumDynamicBytes)))) {
            var neededOffsets: [UInt64] = [], runPath: UInt64?, rPath: UInt64?
            var stringTable: UInt64?, stringTableSize: UInt64 = 0
            var at = 0
            while at + 16 <= entries.count {
                let tag = i64(entries, at), value = u64(entries, at + 8)
                at += 16
                switch tag {
                case 0: at = entries.count            // DT_NULL
                case 1: neededOffsets.append(value)   // DT_NEEDED
                case 5: stringTable = value           // DT_STRTAB (an address)
                case 10: stringTableSize = value      // DT_STRSZ
                case 15: rPath = value                // DT_RPATH
                case 29: runPath = value              // DT_RUNPATH
                default: break
                }
            }
            // The string table's address, as a file offset through the segment that maps it.
            if let address = stringTable,
               let segment = loads.first(where: { address >= $0.address && address - $0.address < $0.size }) {
                let tableStart = segment.offset + Int64(address - segment.address)
                let tableEnd = min(size, tableStart + Int64(min(stringTableSize, UInt64(size))))
                func string(_ offset: UInt64) -> String? {
                    guard offset < UInt64(tableEnd - tableStart) else { return nil }
                    let start = tableStart + Int64(offset)
                    guard let bytes = read(start, Int(min(Int64(maximumString), tableEnd - start))) else { return nil }
                    return cString(bytes)
                }
                needed = neededOffsets.compactMap(string).filter { !$0.isEmpty }
                if let paths = (runPath ?? rPath).flatMap(string) {
                    searchPaths = paths.split(separator: ":").map(String.init).filter { !$0.isEmpty }
                }
            }
        }
        return ELFDependencies(interpreter: interpreter, needed: needed, searchPaths: searchPaths, machine: machine)
    }

    /// The directories the loader searches after the file's own search paths: the multiarch
    /// directories of its machine (Debian and Ubuntu keep libraries there and list them in
    /// `/etc/ld.so.cache`), then the usual ones. Relative to the root.
    var defaultDirectories: [String] {
        let triplet: String? = switch machine {
        case 62: "x86_64-linux-gnu"
        case 183: "aarch64-linux-gnu"
        case 243: "riscv64-linux-gnu"
        case 21: "powerpc64le-linux-gnu"
        case 22: "s390x-linux-gnu"
        default: nil
        }
        let multiarch = triplet.map { ["lib/\($0)", "usr/lib/\($0)"] } ?? []
        return multiarch + ["lib64", "usr/lib64", "lib", "usr/lib", "usr/local/lib"]
    }

    private static func cString(_ bytes: [UInt8]) -> String? {
        guard let end = bytes.firstIndex(of: 0) else { return nil }
        return String(decoding: bytes[..<end], as: UTF8.self)
    }

    private static func u16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) | UInt16(b[at + 1]) << 8 }
    private static func u32(_ b: [UInt8], _ at: Int) -> UInt32 { (0 ..< 4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * $1) } }
    private static func u64(_ b: [UInt8], _ at: Int) -> UInt64 { (0 ..< 8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * $1) } }
    private static func i64(_ b: [UInt8], _ at: Int) -> Int64 { Int64(bitPattern: u64(b, at)) }
}
