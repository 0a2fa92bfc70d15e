// Command refsnapshotter serves the reference Stargz Snapshotter (Debian's
// golang-github-containerd-stargz-snapshotter-dev, v0.12) as a containerd proxy
// snapshotter on a unix socket, for Benchmarks/hellobench.py. It only wires the
// reference's public packages together (its fs and snapshot packages, the way its
// service package does, plus containerd's snapshotservice.FromSnapshotter and
// grpc), with the reference's default filesystem settings (prefetch and
// background fetch on) unless a flag says otherwise; it is a benchmark harness,
// not part of swift-estargz. (Debian's tree lacks the CRI API the service
// package imports, hence fs + snapshot directly; registry hosts are built as the
// reference's resolver builds them: retrying HTTP client, plain HTTP for loopback.)
//
// Build (the v0.12 tree needs Go 1.19 and GOPATH mode):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode /usr/lib/go-1.19/bin/go build -o refsnapshotter ./Benchmarks/refsnapshotter
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	fsconfig "github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	snbase "github.com/containerd/stargz-snapshotter/snapshot"
	rhttp "github.com/hashicorp/go-retryablehttp"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
)

// hosts mirrors the reference resolver's defaults: no mirrors, no credentials,
// a retrying client with a 30 s timeout, plain HTTP for loopback registries.
func hosts(ref reference.Spec) ([]docker.RegistryHost, error) {
	client := rhttp.NewClient()
	client.Logger = nil
	transport := client.StandardClient()
	transport.Timeout = 30 * time.Second
	host := docker.RegistryHost{
		Client:       transport,
		Host:         ref.Hostname(),
		Scheme:       "https",
		Path:         "/v2",
		Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
		Authorizer:   docker.NewDockerAuthorizer(docker.WithAuthClient(transport)),
	}
	if localhost, _ := docker.MatchLocalhost(host.Host); localhost {
		host.Scheme = "http"
	}
	return []docker.RegistryHost{host}, nil
}

func main() {
	root := flag.String("root", "/var/lib/refsnapshotter", "state directory")
	address := flag.String("address", "/run/refsnapshotter.sock", "unix socket to serve on")
	noPrefetch := flag.Bool("no-prefetch", false, "do not prefetch the prioritized region")
	noBackground := flag.Bool("no-background-fetch", false, "do not fetch the rest of each layer in the background")
	logLevel := flag.String("log-level", "info", "logrus level")
	flag.Parse()

	level, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	logrus.SetLevel(level)
	ctx := log.WithLogger(context.Background(), log.L)

	var config fsconfig.Config
	config.NoPrefetch = *noPrefetch
	config.NoBackgroundFetch = *noBackground
	config.NoPrometheus = true

	// As the reference's service package: the filesystem under ROOT/stargz, snapshots under
	// ROOT/snapshotter, sources from the default remote-snapshot labels.
	fs, err := stargzfs.NewFilesystem(filepath.Join(*root, "stargz"), config,
		stargzfs.WithGetSources(source.FromDefaultLabels(hosts)),
		stargzfs.WithOverlayOpaqueType(layer.OverlayOpaqueTrusted))
	if err != nil {
		log.G(ctx).WithError(err).Fatal("cannot create the filesystem")
	}
	snapshotter, err := snbase.NewSnapshotter(ctx, filepath.Join(*root, "snapshotter"), fs, snbase.AsynchronousRemove)
	if err != nil {
		log.G(ctx).WithError(err).Fatal("cannot create the snapshotter")
	}
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		log.G(ctx).WithError(err).Fatal("socket directory")
	}
	os.Remove(*address)
	listener, err := net.Listen("unix", *address)
	if err != nil {
		log.G(ctx).WithError(err).Fatal("listen")
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(snapshotter))

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-signals
		server.Stop()
	}()
	if err := server.Serve(listener); err != nil {
		log.G(ctx).WithError(err).Error("serve")
	}
	if err := snapshotter.Close(); err != nil {
		log.G(ctx).WithError(err).Error("close")
	}
}
