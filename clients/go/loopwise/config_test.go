package loopwise

import (
	"errors"
	"testing"
	"time"
)

func TestConfigDefaultsAndErrors(t *testing.T) {
	cfg, err := Config{}.withDefaults()
	if err != nil || cfg.DecisionAddress != DefaultDecisionAddress || cfg.FeedbackAddress != DefaultFeedbackAddress ||
		cfg.Deadline != time.Second || cfg.Retries != 2 || cfg.Insecure {
		t.Fatalf("%+v %v", cfg, err)
	}
	if cfg, _ := (Config{Retries: -1}).withDefaults(); cfg.Retries != 0 {
		t.Fatalf("Retries -1: %d", cfg.Retries)
	}
	bad := map[string]Config{
		"CertFile": {CertFile: "client.crt"},
		"Insecure": {Insecure: true, CAFile: "ca.crt"},
		"Deadline": {Deadline: -time.Second},
		"Defaults": {Defaults: map[string]string{"offer": ""}},
	}
	for field, cfg := range bad {
		_, err := New(cfg)
		var configErr *ConfigError
		if !errors.As(err, &configErr) || configErr.Field != field {
			t.Errorf("%s: %v", field, err)
		}
	}
	if _, err := New(Config{CAFile: "/nonexistent/ca.crt"}); err == nil {
		t.Fatal("a missing CA file is refused")
	}
	// Without a CA file: TLS with the system's roots (secure by default).
	client, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	_ = client.Close()
}

func TestConfigFromEnv(t *testing.T) {
	for key, value := range map[string]string{
		"LOOPWISE_DECISION_ADDRESS": "d:1", "LOOPWISE_FEEDBACK_ADDRESS": "f:2",
		"LOOPWISE_TLS_CA_FILE": "ca.crt", "LOOPWISE_TLS_CERT_FILE": "service.crt", "LOOPWISE_TLS_KEY_FILE": "service.key",
		"LOOPWISE_TLS_CLIENT_CERT_FILE": "client.crt", "LOOPWISE_TLS_CLIENT_KEY_FILE": "client.key",
		"LOOPWISE_TLS_SERVER_NAME": "decision", "LOOPWISE_TOKEN": "lw_x", "LOOPWISE_CLIENT_DEADLINE_S": "0.25",
		"LOOPWISE_CLIENT_RETRIES": "0", "LOOPWISE_ALLOW_PLAINTEXT": "true",
	} {
		t.Setenv(key, value)
	}
	cfg, err := ConfigFromEnv()
	want := Config{DecisionAddress: "d:1", FeedbackAddress: "f:2", CAFile: "ca.crt", CertFile: "client.crt",
		KeyFile: "client.key", ServerName: "decision", Token: "lw_x", Deadline: 250 * time.Millisecond, Retries: -1}
	if err != nil || cfg.DecisionAddress != want.DecisionAddress || cfg.FeedbackAddress != want.FeedbackAddress ||
		cfg.CAFile != want.CAFile || cfg.CertFile != want.CertFile || cfg.KeyFile != want.KeyFile ||
		cfg.ServerName != want.ServerName || cfg.Token != want.Token || cfg.Deadline != want.Deadline ||
		cfg.Retries != want.Retries || cfg.Insecure {
		t.Fatalf("%+v %v", cfg, err)
	}
	// Plaintext only when allowed and no CA is set.
	t.Setenv("LOOPWISE_TLS_CA_FILE", "")
	if cfg, _ := ConfigFromEnv(); !cfg.Insecure || cfg.CertFile != "" {
		t.Fatalf("%+v", cfg)
	}
	t.Setenv("LOOPWISE_CLIENT_RETRIES", "many")
	if _, err := ConfigFromEnv(); err == nil {
		t.Fatal("a bad retry count is refused")
	}
}
