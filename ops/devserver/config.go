package devserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/common/membership/static"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/primitives"
	sqliteschema "go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	// loopback is where the internal services bind and what clients dial when
	// the frontend binds to an unspecified address (0.0.0.0, ::).
	loopback = "127.0.0.1"
	// clusterName is the name of the single, active cluster.
	clusterName = "active"
	// storeName is the name of the single SQLite data store (default and
	// visibility).
	storeName = "sqlite-default"
)

// ports are the gRPC ports of the four services.
type ports struct {
	ip                                  string // frontend bind IP
	frontend, history, matching, worker int
}

// frontendDial returns the address clients dial to reach the frontend.
func (p ports) frontendDial() string {
	ip := p.ip
	if parsed := net.ParseIP(ip); parsed == nil || parsed.IsUnspecified() {
		ip = loopback
	}
	return hostPort(ip, p.frontend)
}

// allocatePorts checks that the frontend port is free (choosing one if port
// is 0) and picks three distinct free loopback ports for history, matching
// and worker. All listeners are held until every port is chosen, so the four
// ports differ; they are closed before returning, for the server to bind.
func allocatePorts(ip string, port int) (ports, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	listen := func(ip string, port int) (int, error) {
		l, err := net.Listen("tcp", hostPort(ip, port))
		if err != nil {
			if port != 0 && errors.Is(err, syscall.EADDRINUSE) {
				return 0, &PortInUseError{IP: ip, Port: port, Err: err}
			}
			return 0, fmt.Errorf("devserver: cannot listen on %s: %w", hostPort(ip, port), err)
		}
		listeners = append(listeners, l)
		return l.Addr().(*net.TCPAddr).Port, nil
	}

	p := ports{ip: ip}
	var err error
	if p.frontend, err = listen(ip, port); err != nil {
		return ports{}, err
	}
	for _, dst := range []*int{&p.history, &p.matching, &p.worker} {
		if *dst, err = listen(loopback, 0); err != nil {
			return ports{}, err
		}
	}
	return p, nil
}

// sqlConfig returns the SQLite store configuration: a file opened in WAL mode
// (mode=rwc creates it), or a shared-cache in-memory database with a unique
// name.
func sqlConfig(dbFile string) *config.SQL {
	if dbFile == "" {
		return &config.SQL{
			PluginName:        sqliteplugin.PluginName,
			DatabaseName:      "devserver-" + primitives.NewUUID().String(),
			ConnectAttributes: map[string]string{"mode": "memory", "cache": "shared"},
		}
	}
	// Attributes other than SQLite URI parameters are passed as pragmas by
	// their bare name (the "_journal_mode" form would be ignored).
	return &config.SQL{
		PluginName:        sqliteplugin.PluginName,
		DatabaseName:      dbFile,
		ConnectAttributes: map[string]string{"mode": "rwc", "journal_mode": "wal"},
	}
}

// buildConfig returns the static server configuration: one SQLite store for
// persistence and visibility, one history shard, one active cluster, the four
// services on p, archival off.
func buildConfig(opts Options, p ports) (*config.Config, error) {
	var conf config.Config
	conf.Global.Membership.MaxJoinDuration = 30 * time.Second
	conf.Global.Membership.BroadcastAddress = loopback

	conf.Persistence = config.Persistence{
		DefaultStore:     storeName,
		VisibilityStore:  storeName,
		NumHistoryShards: 1,
		DataStores:       map[string]config.DataStore{storeName: {SQL: sqlConfig(opts.DBFile)}},
	}
	if opts.Postgres != nil {
		conf.Persistence = opts.Postgres.persistence()
	}
	conf.ClusterMetadata = &cluster.Config{
		EnableGlobalNamespace:    false,
		FailoverVersionIncrement: 10,
		MasterClusterName:        clusterName,
		CurrentClusterName:       clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{
			clusterName: {
				Enabled:                true,
				InitialFailoverVersion: 1,
				RPCAddress:             p.frontendDial(),
				// Persisted on first start; the stored ID wins afterwards.
				ClusterID: primitives.NewUUID().String(),
			},
		},
	}
	conf.DCRedirectionPolicy.Policy = "noop"
	conf.Services = map[string]config.Service{
		string(primitives.FrontendService): {RPC: config.RPC{GRPCPort: p.frontend, BindOnIP: p.ip}},
		string(primitives.HistoryService):  {RPC: config.RPC{GRPCPort: p.history, BindOnIP: loopback}},
		string(primitives.MatchingService): {RPC: config.RPC{GRPCPort: p.matching, BindOnIP: loopback}},
		string(primitives.WorkerService):   {RPC: config.RPC{GRPCPort: p.worker, BindOnIP: loopback}},
	}
	conf.Archival.History.State = "disabled"
	conf.Archival.Visibility.State = "disabled"
	conf.NamespaceDefaults.Archival.History.State = "disabled"
	conf.NamespaceDefaults.Archival.Visibility.State = "disabled"
	// Required: the worker service's SDK client dials this.
	conf.PublicClient.HostPort = p.frontendDial()
	return &conf, nil
}

// staticHosts resolves every service to its single local host, which makes
// start-up faster and quieter than dynamic membership.
func staticHosts(p ports) map[primitives.ServiceName]static.Hosts {
	return map[primitives.ServiceName]static.Hosts{
		primitives.FrontendService: static.SingleLocalHost(p.frontendDial()),
		primitives.HistoryService:  static.SingleLocalHost(hostPort(loopback, p.history)),
		primitives.MatchingService: static.SingleLocalHost(hostPort(loopback, p.matching)),
		primitives.WorkerService:   static.SingleLocalHost(hostPort(loopback, p.worker)),
	}
}

// dynamicConfig holds the dynamic config of a snappy single-node dev server,
// mostly what `temporal server start-dev` sets.
func dynamicConfig() dynamicconfig.StaticClient {
	return dynamicconfig.StaticClient{
		// Custom search attributes (namespace aliases) are usable the moment
		// they are added, instead of after a cache refresh.
		dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): true,
		// The cache bypass above sends those reads to persistence: raise the
		// persistence QPS ceilings to match (start-dev's values).
		dynamicconfig.FrontendPersistenceMaxQPS.Key(): 10000,
		dynamicconfig.HistoryPersistenceMaxQPS.Key():  45000,
		// Smaller mutable-state cache for a single developer machine.
		dynamicconfig.HistoryCacheHostLevelMaxSize.Key(): 8096,
		// Request rate limits well above what one developer produces
		// (visibility's default of 10 RPS is hit by UIs and polling scripts).
		dynamicconfig.FrontendMaxNamespaceVisibilityRPSPerInstance.Key(): 100,
		dynamicconfig.FrontendRPS.Key():                                  10000,
		dynamicconfig.FrontendMaxNamespaceRPSPerInstance.Key():           10000,
		dynamicconfig.FrontendNamespaceReplicationInducingAPIsRPS.Key():  100,
	}
}

// buildServerOptions returns the temporal.NewServer options.
func buildServerOptions(conf *config.Config, p ports, logger *serverLogger) ([]temporal.ServerOption, error) {
	authorizer, err := authorization.GetAuthorizerFromConfig(&conf.Global.Authorization)
	if err != nil {
		return nil, fmt.Errorf("devserver: create authorizer: %w", err)
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&conf.Global.Authorization, logger)
	if err != nil {
		return nil, fmt.Errorf("devserver: create claim mapper: %w", err)
	}
	return []temporal.ServerOption{
		temporal.WithConfig(conf),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithStaticHosts(staticHosts(p)),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(dynamicConfig()),
	}, nil
}

// prepareDatabase sets up the schema of a new database file and creates the
// namespace if it is missing. An existing file keeps its history.
func prepareDatabase(opts Options, conf *config.Config) error {
	if opts.Postgres != nil {
		return opts.Postgres.prepare() // the namespace is registered once the server is up
	}
	sqlConf := conf.Persistence.DataStores[storeName].SQL
	if opts.DBFile != "" {
		isNew, err := isNewDBFile(opts.DBFile)
		if err != nil {
			return err
		}
		if isNew {
			if err := sqliteschema.SetupSchema(sqlConf); err != nil {
				return fmt.Errorf("devserver: set up SQLite schema in %s: %w", opts.DBFile, err)
			}
		}
	}
	// In memory mode the plugin sets up the schema itself when it opens the
	// database (here, first), and keeps it open for the process's lifetime.
	nsConf, err := sqliteschema.NewNamespaceConfig(clusterName, opts.Namespace, false, opts.SearchAttributes)
	if err != nil {
		return fmt.Errorf("devserver: namespace %q: %w", opts.Namespace, err)
	}
	nsConf.Detail.Config.Retention = durationpb.New(DefaultRetention)
	if err := sqliteschema.CreateNamespaces(sqlConf, nsConf); err != nil {
		return fmt.Errorf("devserver: create namespace %q in %s: %w", opts.Namespace, dbName(opts.DBFile), err)
	}
	return nil
}

// isNewDBFile reports whether path needs its schema set up: it does not exist,
// or it is empty and has no write-ahead log with data (an empty file left by
// an interrupted first start, or created by a user).
func isNewDBFile(path string) (bool, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("devserver: database file: %w", err)
	case fi.IsDir():
		return false, fmt.Errorf("devserver: database file %s is a directory", path)
	case fi.Size() > 0:
		return false, nil
	}
	wal, err := os.Stat(path + "-wal")
	if err == nil && wal.Size() > 0 {
		return false, nil
	}
	return true, nil
}

func dbName(dbFile string) string {
	if dbFile == "" {
		return "the in-memory database"
	}
	return dbFile
}

// absDBFile returns the absolute, cleaned form of a database file path.
func absDBFile(dbFile string) (string, error) {
	if dbFile == "" {
		return "", nil
	}
	abs, err := filepath.Abs(dbFile)
	if err != nil {
		return "", fmt.Errorf("devserver: database file %q: %w", dbFile, err)
	}
	return abs, nil
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
