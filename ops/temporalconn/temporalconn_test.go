package temporalconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdklog "go.temporal.io/sdk/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/ops/devserver"
)

// pki is a throwaway certificate authority with a server certificate for
// 127.0.0.1 and "temporal.test", and a client certificate, as PEM files.
type pki struct {
	dir                            string
	ca                             *x509.Certificate
	caKey                          *ecdsa.PrivateKey
	caFile, serverCert, serverKey  string
	clientCert, clientKey, otherCA string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	p.ca, p.caKey, p.caFile = selfSigned(t, p.dir, "ca")
	_, _, p.otherCA = selfSigned(t, p.dir, "other-ca")
	p.serverCert, p.serverKey = p.issue(t, "server", &x509.Certificate{
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"temporal.test"}})
	p.clientCert, p.clientKey = p.issue(t, "client", &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return p
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
}

func selfSigned(t *testing.T, dir, name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	f := filepath.Join(dir, name+".pem")
	writePEM(t, f, "CERTIFICATE", der)
	return cert, key, f
}

func (p *pki) issue(t *testing.T, name string, tmpl *x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.Subject = pkix.Name{CommonName: name}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func (p *pki) serverTLS(t *testing.T, requireClient bool) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	require.NoError(t, err)
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2"}}
	if requireClient {
		pool := x509.NewCertPool()
		pool.AddCert(p.ca)
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg
}

func quiet() sdklog.Logger {
	return sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// A Temporal Cloud-style connection: TLS verified against the given CA and
// the API key as a bearer token on every call, seen by a gRPC server.
func TestAPIKeyTravelsOverTLS(t *testing.T) {
	p := newPKI(t)
	var mu sync.Mutex
	var auth []string
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(p.serverTLS(t, false))),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			md, _ := metadata.FromIncomingContext(stream.Context())
			mu.Lock()
			auth = append(auth, md.Get("authorization")...)
			mu.Unlock()
			return status.Error(codes.Unimplemented, "not a Temporal server")
		}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	c := config.Connection{Address: lis.Addr().String(), Namespace: "ns.acct", TLSCA: p.caFile, APIKey: "secret-key"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := Dial(ctx, c, quiet(), nil)
	if err == nil {
		cl.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, auth, "the server received calls")
	assert.Equal(t, "Bearer secret-key", auth[0])

	// A server whose certificate another CA signed is refused, and the
	// error never shows the key.
	c.TLSCA = p.otherCA
	_, err = Dial(ctx, c, quiet(), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "TLS and an API key")
	assert.NotContains(t, err.Error(), "secret-key")
}

// Mutual TLS in front of a real Temporal server: a TLS proxy that demands a
// client certificate signed by the CA forwards to the embedded server.
func TestMutualTLSToARealServer(t *testing.T) {
	p := newPKI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := devserver.Start(ctx, devserver.Options{Namespace: "mtls"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop() })
	lis, err := tls.Listen("tcp", "127.0.0.1:0", p.serverTLS(t, true))
	require.NoError(t, err)
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if err := conn.(*tls.Conn).Handshake(); err != nil {
					return
				}
				up, err := net.Dial("tcp", s.FrontendHostPort())
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, conn) }()
				_, _ = io.Copy(conn, up)
			}()
		}
	}()

	c := config.Connection{Address: lis.Addr().String(), Namespace: "mtls", TLSCA: p.caFile, TLSServerName: "temporal.test",
		TLSCert: p.clientCert, TLSKey: p.clientKey}
	cl, err := Dial(ctx, c, quiet(), nil)
	require.NoError(t, err)
	defer cl.Close()
	_, err = cl.CheckHealth(ctx, nil)
	require.NoError(t, err, "a call through mutual TLS reaches the server")
	_, err = cl.WorkflowService().DescribeNamespace(ctx, nil)
	require.Error(t, err, "an empty request is the server's own error, so the call got there")

	noCert := c
	noCert.TLSCert, noCert.TLSKey = "", ""
	short, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	_, err = Dial(short, noCert, quiet(), nil)
	require.Error(t, err, "without a client certificate the proxy refuses the handshake")
	assert.Contains(t, err.Error(), "namespace mtls, TLS")
}

func TestTLSConfigErrorsNameTheFile(t *testing.T) {
	p := newPKI(t)
	cfg, err := TLSConfig(config.Connection{})
	require.NoError(t, err)
	assert.Nil(t, cfg, "no TLS settings: plain TCP")

	_, err = TLSConfig(config.Connection{TLSCA: filepath.Join(p.dir, "missing.pem")})
	require.ErrorContains(t, err, "missing.pem")
	notPEM := filepath.Join(p.dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	_, err = TLSConfig(config.Connection{TLSCA: notPEM})
	require.ErrorContains(t, err, "no PEM certificate in it")
	_, err = TLSConfig(config.Connection{TLSCert: p.clientCert, TLSKey: p.serverKey})
	require.ErrorContains(t, err, p.clientCert, "a key that is not the certificate's")
	_, err = TLSConfig(config.Connection{TLSCert: p.clientCert})
	require.ErrorContains(t, err, "go together")

	cfg, err = TLSConfig(config.Connection{TLSCert: p.clientCert, TLSKey: p.clientKey, TLSCA: p.caFile, TLSServerName: "temporal.test"})
	require.NoError(t, err)
	assert.Len(t, cfg.Certificates, 1)
	assert.Equal(t, "temporal.test", cfg.ServerName)
	assert.NotNil(t, cfg.RootCAs)
}
