package devserver

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/log"
	_ "go.temporal.io/server/common/persistence/sql/sqlplugin/postgresql" // the postgres12 plugin
	"go.temporal.io/server/tools/common/schema"
	"go.temporal.io/server/tools/sql"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Postgres is a PostgreSQL server to persist the Temporal server in,
// instead of SQLite: what a self-hosted cluster runs on. Its databases
// are created, and their schemas set up and brought to the server's
// version, when missing.
type Postgres struct {
	Addr     string // host:port
	User     string
	Password string
	// Database and VisibilityDatabase default to "temporal" and
	// "temporal_visibility".
	Database, VisibilityDatabase string
}

// postgresPlugin is the server's PostgreSQL persistence plugin.
const postgresPlugin = "postgres12"

// Data store names of a PostgreSQL-backed server.
const (
	pgStore           = "postgres-default"
	pgVisibilityStore = "postgres-visibility"
)

func (p *Postgres) withDefaults() {
	if p.Database == "" {
		p.Database = "temporal"
	}
	if p.VisibilityDatabase == "" {
		p.VisibilityDatabase = "temporal_visibility"
	}
}

func (p *Postgres) sql(database string) *config.SQL {
	return &config.SQL{PluginName: postgresPlugin, DatabaseName: database, ConnectAddr: p.Addr, ConnectProtocol: "tcp",
		User: p.User, Password: p.Password, MaxConns: 20, MaxIdleConns: 20}
}

// persistence is the server's store configuration on p.
func (p *Postgres) persistence() config.Persistence {
	return config.Persistence{
		DefaultStore: pgStore, VisibilityStore: pgVisibilityStore, NumHistoryShards: 1,
		DataStores: map[string]config.DataStore{
			pgStore:           {SQL: p.sql(p.Database)},
			pgVisibilityStore: {SQL: p.sql(p.VisibilityDatabase)},
		},
	}
}

// prepare creates the two databases if missing and sets up or updates
// their schemas from the server's embedded schema files, as
// temporal-sql-tool's create-database, setup-schema and update-schema do.
func (p *Postgres) prepare() error {
	logger := log.NewNoopLogger()
	for _, db := range []struct{ name, schema string }{
		{p.Database, "postgresql/v12/temporal"}, {p.VisibilityDatabase, "postgresql/v12/visibility"},
	} {
		admin, err := sql.NewConnection(p.sql("postgres"), logger)
		if err != nil {
			return fmt.Errorf("devserver: connect to PostgreSQL at %s as %s: %w", p.Addr, p.User, err)
		}
		err = admin.CreateDatabase(db.name)
		admin.Close()
		if err != nil {
			return fmt.Errorf("devserver: create database %s on %s: %w", db.name, p.Addr, err)
		}
		conn, err := sql.NewConnection(p.sql(db.name), logger)
		if err != nil {
			return fmt.Errorf("devserver: connect to database %s on %s: %w", db.name, p.Addr, err)
		}
		if _, err := conn.ReadSchemaVersion(); err != nil { // a new database: no version table yet
			// Version 0.0 with no tables; the update below applies every
			// versioned step, as `temporal-sql-tool setup-schema -v 0.0` then
			// `update-schema -d .../versioned` do.
			err = schema.NewSetupSchemaTask(conn, &schema.SetupConfig{InitialVersion: "0.0"}, logger).Run()
			if err != nil {
				conn.Close()
				return fmt.Errorf("devserver: set up schema %s in %s: %w", db.schema, db.name, err)
			}
		}
		err = schema.NewUpdateSchemaTask(conn, &schema.UpdateConfig{DBName: db.name, SchemaName: db.schema}, logger).Run()
		conn.Close()
		if err != nil {
			return fmt.Errorf("devserver: update schema %s in %s: %w", db.schema, db.name, err)
		}
	}
	return nil
}

// registerNamespace creates the namespace through the frontend when it is
// missing (a SQLite server writes it to the database before start).
func registerNamespace(ctx context.Context, ws workflowservice.WorkflowServiceClient, namespace string) error {
	_, err := ws.RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
		Namespace: namespace, WorkflowExecutionRetentionPeriod: durationpb.New(DefaultRetention)})
	var exists *serviceerror.NamespaceAlreadyExists
	if err != nil && !errors.As(err, &exists) {
		return err
	}
	return nil
}
