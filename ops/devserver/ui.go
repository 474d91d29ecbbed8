package devserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	"github.com/temporalio/ui-server/v2/server/server_options"
)

// DefaultUIPort is where `temporal server start-dev` serves its Web UI
// (the frontend port + 1000).
const DefaultUIPort = 8233

// UI is the Temporal Web UI served from this process, as
// `temporal server start-dev` serves it, for runs on the embedded server.
type UI struct {
	srv  *uiserver.Server
	addr string
	done chan error
}

// StartUI serves the Temporal Web UI (its assets are embedded in the
// ui-server module) on ip:port for the frontend at frontendHostPort, and
// returns once it answers its health check.
func StartUI(ctx context.Context, ip string, port int, frontendHostPort, namespace string) (*UI, error) {
	if ip == "" || ip == "localhost" {
		ip = "127.0.0.1"
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	// The UI server exits the process when it cannot bind: check first.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &PortInUseError{IP: ip, Port: port, Err: err}
	}
	_ = ln.Close()
	cfg := &uiconfig.Config{
		Host: ip, Port: port, TemporalGRPCAddress: frontendHostPort, EnableUI: true,
		DefaultNamespace: namespace, HideLogs: true,
	}
	cfg.CORS.CookieInsecure = true // plain HTTP on the loopback address
	u := &UI{srv: uiserver.NewServer(server_options.WithConfigProvider(cfg)), addr: addr, done: make(chan error, 1)}
	go func() { u.done <- u.srv.Start() }()
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return u, nil
			}
		}
		select {
		case err := <-u.done:
			return nil, fmt.Errorf("devserver: web UI on %s stopped: %v", addr, err)
		case <-ctx.Done():
			u.srv.Stop()
			return nil, fmt.Errorf("devserver: web UI on %s did not become ready: %w", addr, errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// URL is where a browser opens the UI.
func (u *UI) URL() string { return "http://" + u.addr }

// Stop stops serving the UI.
func (u *UI) Stop() { u.srv.Stop() }
