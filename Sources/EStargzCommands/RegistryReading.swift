import ArgumentParser

/// What `ls` and `cat` do with a REF that is no local file.
///
/// The lite `estargz` links no networking: it hands its whole command line to `estargz-remote`,
/// which reads the registry. Both commands are generic over this, so both executables parse the
/// same options, print the same help and share the local path.
public protocol RegistryReading {
    /// Lists a registry image or layer blob as `command` asks.
    static func list(_ command: List<Self>) throws

    /// Writes `command.path` of a registry image or layer blob to standard output, verifying it.
    static func cat(_ command: Cat<Self>) throws
}
