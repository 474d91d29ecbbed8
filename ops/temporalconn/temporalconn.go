// Package temporalconn turns alignflow's connection settings into a
// Temporal client: plain TCP for a local server, TLS or mutual TLS for a
// self-hosted cluster, and an API key for Temporal Cloud. Every command and
// the worker dial through it, so they accept the same settings.
package temporalconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/alignflow/alignflow/config"
)

// TLSConfig is the client's TLS configuration, nil when the connection
// does not use TLS. Errors name the file that could not be used.
func TLSConfig(c config.Connection) (*tls.Config, error) {
	if !c.TLS() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together (mutual TLS needs both), got cert %q and key %q", c.TLSCert, c.TLSKey)
	}
	if c.TLSCert != "" {
		pair, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("client certificate --tls-cert %s with --tls-key %s: %w", c.TLSCert, c.TLSKey, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("CA certificate --tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA certificate --tls-ca %s: no PEM certificate in it", c.TLSCA)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// Options are the Temporal client options of a connection.
func Options(c config.Connection, logger sdklog.Logger) (client.Options, error) {
	tlsCfg, err := TLSConfig(c)
	if err != nil {
		return client.Options{}, err
	}
	opts := client.Options{HostPort: c.Address, Namespace: c.Namespace, Logger: logger,
		ConnectionOptions: client.ConnectionOptions{TLS: tlsCfg}}
	if c.APIKey != "" {
		opts.Credentials = client.NewAPIKeyStaticCredentials(c.APIKey)
	}
	return opts, nil
}

// Dial connects to the connection's Temporal server, reporting the SDK's
// metrics to handler (nil: none). The error says how the connection was
// attempted (TLS or not, with an API key or not), never the key itself.
func Dial(ctx context.Context, c config.Connection, logger sdklog.Logger, handler client.MetricsHandler) (client.Client, error) {
	opts, err := Options(c, logger)
	if err != nil {
		return nil, err
	}
	opts.MetricsHandler = handler
	cl, err := client.DialContext(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("connect to Temporal at %s (namespace %s, %s): %w", c.Address, c.Namespace, describe(c), err)
	}
	return cl, nil
}

// describe says how a connection is made, for error messages.
func describe(c config.Connection) string {
	switch {
	case c.APIKey != "" && c.TLSCert != "":
		return "mutual TLS and an API key"
	case c.APIKey != "":
		return "TLS and an API key"
	case c.TLSCert != "":
		return "mutual TLS"
	case c.TLS():
		return "TLS"
	}
	return "no TLS"
}
