package loopwise

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

const (
	// DefaultDecisionAddress and DefaultFeedbackAddress are where the services listen
	// on one machine (make up).
	DefaultDecisionAddress = "127.0.0.1:50051"
	DefaultFeedbackAddress = "127.0.0.1:50052"
	// DefaultDeadline bounds one Decide call, its retries included.
	DefaultDeadline = time.Second
	// DefaultRetries is the most extra attempts of a call after UNAVAILABLE or
	// RESOURCE_EXHAUSTED with retry pushback.
	DefaultRetries = 2
	// BulkDeadline is the least deadline of LogOutcomes and GetUseCase.
	BulkDeadline = 30 * time.Second
	// maxMessageBytes matches the services' default LOOPWISE_MAX_MESSAGE_BYTES.
	maxMessageBytes = 16 << 20
	// roundRobin spreads calls over every address a target resolves to.
	roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`
)

// Config says where the services are and how to reach them. The zero value of a field
// means its default; the transport is TLS unless Insecure is set.
type Config struct {
	// DecisionAddress is the decision service: host:port, or a gRPC target such as
	// dns:///loopwise-decision-headless.loopwise.svc:50051 (calls go round robin over
	// every address the name resolves to). Default 127.0.0.1:50051.
	DecisionAddress string
	// FeedbackAddress is the feedback service, in the same forms. Default 127.0.0.1:50052.
	FeedbackAddress string

	// CAFile is the PEM file of the CA that signed the servers' certificates; empty:
	// the system's roots.
	CAFile string
	// CertFile and KeyFile are the client certificate and its key (PEM) presented for
	// mutual TLS; both or neither.
	CertFile string
	KeyFile  string
	// ServerName is the name to verify in the servers' certificates when it differs
	// from the host of the address.
	ServerName string
	// Insecure turns TLS off (plaintext, for loopback experiments against services run
	// with LOOPWISE_ALLOW_PLAINTEXT=true). It cannot be combined with the TLS files.
	Insecure bool

	// Token is the bearer token sent with every call (authorization: Bearer <token>).
	Token string

	// Deadline bounds one Decide call, its retries included (default 1 s);
	// LogOutcomes and GetUseCase get at least BulkDeadline.
	Deadline time.Duration
	// Retries is the most extra attempts after UNAVAILABLE or RESOURCE_EXHAUSTED with
	// retry pushback, within the deadline: 0 means the default (2), a negative value
	// no retry at all.
	Retries int

	// Defaults gives the default action per use case for the local fallback; it takes
	// precedence over the default learned from GetUseCase.
	Defaults map[string]string

	// DialOptions are added to the options of both connections (a custom dialer,
	// interceptors, keepalive).
	DialOptions []grpc.DialOption
}

// ConfigFromEnv reads a Config from the LOOPWISE_* variables that the Python SDK and
// the CLI read: LOOPWISE_DECISION_ADDRESS, LOOPWISE_FEEDBACK_ADDRESS,
// LOOPWISE_TLS_CA_FILE, LOOPWISE_TLS_CLIENT_CERT_FILE and LOOPWISE_TLS_CLIENT_KEY_FILE
// (else LOOPWISE_TLS_CERT_FILE and LOOPWISE_TLS_KEY_FILE), LOOPWISE_TLS_SERVER_NAME,
// LOOPWISE_TOKEN, LOOPWISE_CLIENT_DEADLINE_S, LOOPWISE_CLIENT_RETRIES, and
// LOOPWISE_ALLOW_PLAINTEXT (plaintext only when it is true and no CA file is set).
func ConfigFromEnv() (Config, error) {
	env := func(name string) string { return strings.TrimSpace(os.Getenv(name)) }
	first := func(names ...string) string {
		for _, name := range names {
			if value := env(name); value != "" {
				return value
			}
		}
		return ""
	}
	cfg := Config{
		DecisionAddress: env("LOOPWISE_DECISION_ADDRESS"),
		FeedbackAddress: env("LOOPWISE_FEEDBACK_ADDRESS"),
		CAFile:          env("LOOPWISE_TLS_CA_FILE"),
		CertFile:        first("LOOPWISE_TLS_CLIENT_CERT_FILE", "LOOPWISE_TLS_CERT_FILE"),
		KeyFile:         first("LOOPWISE_TLS_CLIENT_KEY_FILE", "LOOPWISE_TLS_KEY_FILE"),
		ServerName:      env("LOOPWISE_TLS_SERVER_NAME"),
		Token:           env("LOOPWISE_TOKEN"),
	}
	if text := env("LOOPWISE_ALLOW_PLAINTEXT"); text != "" {
		allow, err := strconv.ParseBool(text)
		if err != nil {
			return Config{}, &ConfigError{Field: "LOOPWISE_ALLOW_PLAINTEXT", Reason: fmt.Sprintf("not a boolean: %q", text)}
		}
		cfg.Insecure = allow && cfg.CAFile == ""
		if cfg.Insecure {
			cfg.CertFile, cfg.KeyFile = "", ""
		}
	}
	if text := env("LOOPWISE_CLIENT_DEADLINE_S"); text != "" {
		seconds, err := strconv.ParseFloat(text, 64)
		if err != nil || seconds <= 0 {
			return Config{}, &ConfigError{Field: "LOOPWISE_CLIENT_DEADLINE_S", Reason: fmt.Sprintf("not a positive number: %q", text)}
		}
		cfg.Deadline = time.Duration(seconds * float64(time.Second))
	}
	if text := env("LOOPWISE_CLIENT_RETRIES"); text != "" {
		retries, err := strconv.Atoi(text)
		if err != nil || retries < 0 {
			return Config{}, &ConfigError{Field: "LOOPWISE_CLIENT_RETRIES", Reason: fmt.Sprintf("not a count: %q", text)}
		}
		cfg.Retries = retries
		if retries == 0 {
			cfg.Retries = -1
		}
	}
	return cfg, nil
}

// withDefaults fills the defaults in and checks the TLS settings.
func (c Config) withDefaults() (Config, error) {
	if c.DecisionAddress == "" {
		c.DecisionAddress = DefaultDecisionAddress
	}
	if c.FeedbackAddress == "" {
		c.FeedbackAddress = DefaultFeedbackAddress
	}
	if c.Deadline < 0 {
		return c, &ConfigError{Field: "Deadline", Reason: fmt.Sprintf("must be positive, not %v", c.Deadline)}
	}
	if c.Deadline == 0 {
		c.Deadline = DefaultDeadline
	}
	if c.Retries == 0 {
		c.Retries = DefaultRetries
	} else if c.Retries < 0 {
		c.Retries = 0
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return c, &ConfigError{Field: "CertFile", Reason: "a client certificate needs its key and a key its certificate (CertFile and KeyFile)"}
	}
	if c.Insecure && (c.CAFile != "" || c.CertFile != "" || c.ServerName != "") {
		return c, &ConfigError{Field: "Insecure", Reason: "plaintext cannot be combined with CAFile, CertFile, KeyFile or ServerName"}
	}
	defaults := make(map[string]string, len(c.Defaults))
	for useCase, action := range c.Defaults {
		if action == "" {
			return c, &ConfigError{Field: "Defaults", Reason: fmt.Sprintf("empty default action for use case %q", useCase)}
		}
		defaults[useCase] = action
	}
	c.Defaults = defaults
	return c, nil
}

// transportCredentials are the TLS credentials (with the client certificate for mutual
// TLS) or plaintext when Insecure is set.
func (c Config) transportCredentials() (credentials.TransportCredentials, error) {
	if c.Insecure {
		return insecure.NewCredentials(), nil
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, &ConfigError{Field: "CAFile", Reason: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &ConfigError{Field: "CAFile", Reason: fmt.Sprintf("no PEM certificate in %s", c.CAFile)}
		}
		tlsConfig.RootCAs = pool
	}
	if c.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, &ConfigError{Field: "CertFile", Reason: err.Error()}
		}
		tlsConfig.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(tlsConfig), nil
}
