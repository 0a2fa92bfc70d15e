import EStargzRemote
import Testing

@Suite struct ImageProcessTests {
    private func process(_ json: String) throws -> ImageProcess {
        try ImageProcess(imageConfig: Array(json.utf8))
    }

    /// A name is looked up in the config's PATH, in order, as runc does; Entrypoint comes before Cmd.
    @Test func aProgramNameIsSearchedInThePath() throws {
        let python = try process(#"{"architecture":"amd64","config":{"Cmd":["python3"],"Env":["LANG=C.UTF-8","PATH=/usr/local/bin:/usr/bin:/bin"]}}"#)
        #expect(python.arguments == ["python3"])
        #expect(python.programPaths == ["usr/local/bin/python3", "usr/bin/python3", "bin/python3"])
        let entry = try process(#"{"config":{"Entrypoint":["tini","--"],"Cmd":["nginx"],"Env":["PATH=/sbin"]}}"#)
        #expect(entry.arguments == ["tini", "--", "nginx"])
        #expect(entry.programPaths == ["sbin/tini"])
    }

    /// Without PATH in Env, containerd's default PATH; repeated and relative PATH elements, and
    /// `.` and `..`, are what the kernel would make of them.
    @Test func pathDefaultsAndOddElements() throws {
        let plain = try process(#"{"config":{"Cmd":["sh"]}}"#)
        #expect(plain.path == ImageProcess.defaultPath)
        #expect(plain.programPaths == ["usr/local/sbin/sh", "usr/local/bin/sh", "usr/sbin/sh", "usr/bin/sh", "sbin/sh", "bin/sh"])
        let odd = try process(#"{"config":{"Cmd":["app"],"Env":["PATH=/opt/./x/../bin::relative:/opt/bin/:/"]}}"#)
        #expect(odd.programPaths == ["opt/bin/app", "app"])
    }

    /// A program with a slash is taken as it is: absolute from the root, relative from WorkingDir;
    /// nothing climbs above the root.
    @Test func aPathIsTakenAsItIs() throws {
        #expect(try process(#"{"config":{"Entrypoint":["/usr/bin/env","x"]}}"#).programPaths == ["usr/bin/env"])
        #expect(try process(#"{"config":{"Cmd":["./run.sh"],"WorkingDir":"/app"}}"#).programPaths == ["app/run.sh"])
        #expect(try process(#"{"config":{"Cmd":["bin/run"]}}"#).programPaths == ["bin/run"])
        #expect(try process(#"{"config":{"Cmd":["../../../etc/x"],"WorkingDir":"/srv"}}"#).programPaths == ["etc/x"])
        #expect(try process(#"{"config":{"Cmd":["/"]}}"#).programPaths == [])
    }

    /// A config without a process, or naming no program, gives no paths; one that is not an image
    /// config is a typed error.
    @Test func noProgramAndBadConfigs() throws {
        #expect(try process(#"{"architecture":"amd64","os":"linux"}"#) == ImageProcess())
        #expect(try process(#"{"config":{"Env":["PATH=/bin"]}}"#).programPaths == [])
        #expect(try process(#"{"config":{"Cmd":[""]}}"#).programPaths == [])
        for bad in ["", "[1]", #"{"config":{"Cmd":"sh"}}"#, #"{"config":"#] {
            #expect(throws: RegistryError.self) { try ImageProcess(imageConfig: Array(bad.utf8)) }
        }
    }
}
