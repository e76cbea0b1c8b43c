// Command smoke calls a running decision/feedback pair through the loopwise Go client:
// Decide for one unit, then LogOutcomes for that decision twice (the second time must be
// a duplicate), and prints what it got as one JSON object. It exits 1 when a call fails
// or an answer is inconsistent. TLS (with -ca, and -cert/-key for mutual TLS) unless
// -insecure; the token from -token or LOOPWISE_TOKEN.
//
//	go run ./cmd/smoke -decision 127.0.0.1:50051 -feedback 127.0.0.1:50052 \
//	    -ca ca.crt -cert client.crt -key client.key \
//	    -use-case checkout_upsell -feature basket_value=42.5 -feature device=mobile
//
// With -pause it then waits for a line on standard input and decides once more
// (printing a second JSON object): a test stops the decision service meanwhile to see
// the local fallback to the default learned at the first contact.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/loopwise/loopwise/clients/go/loopwise"
)

// features collects repeated -feature name=value flags (numbers, else categories).
type features map[string]any

func (f features) String() string { return fmt.Sprint(len(f)) }

func (f features) Set(text string) error {
	name, value, ok := strings.Cut(text, "=")
	if !ok || name == "" {
		return fmt.Errorf("want name=value, got %q", text)
	}
	if number, err := strconv.ParseFloat(value, 64); err == nil {
		f[name] = number
	} else {
		f[name] = value
	}
	return nil
}

// defaults collects repeated -default use_case=action flags.
type defaults map[string]string

func (d defaults) String() string { return fmt.Sprint(len(d)) }

func (d defaults) Set(text string) error {
	useCase, action, ok := strings.Cut(text, "=")
	if !ok || useCase == "" || action == "" {
		return fmt.Errorf("want use_case=action, got %q", text)
	}
	d[useCase] = action
	return nil
}

// result is what the program prints for each decision.
type result struct {
	DecisionID   string  `json:"decision_id"`
	Action       string  `json:"action"`
	ActionIndex  int     `json:"action_index"`
	Fallback     bool    `json:"fallback"`
	Probability  float64 `json:"probability"`
	ModelVersion int64   `json:"model_version"`
	Accepted     int     `json:"accepted"`
	Duplicates   int     `json:"duplicates"`
	RetryAccepts int     `json:"retry_accepted"`
}

func main() {
	var cfg loopwise.Config
	flag.StringVar(&cfg.DecisionAddress, "decision", "127.0.0.1:50051", "decision service address")
	flag.StringVar(&cfg.FeedbackAddress, "feedback", "127.0.0.1:50052", "feedback service address")
	flag.StringVar(&cfg.CAFile, "ca", "", "CA certificate (PEM); empty: the system's roots")
	flag.StringVar(&cfg.CertFile, "cert", "", "client certificate (PEM) for mutual TLS")
	flag.StringVar(&cfg.KeyFile, "key", "", "client key (PEM) for mutual TLS")
	flag.StringVar(&cfg.ServerName, "server-name", "", "name to verify in the servers' certificates")
	flag.BoolVar(&cfg.Insecure, "insecure", false, "plaintext (services run with LOOPWISE_ALLOW_PLAINTEXT)")
	flag.StringVar(&cfg.Token, "token", os.Getenv("LOOPWISE_TOKEN"), "bearer token")
	flag.DurationVar(&cfg.Deadline, "deadline", 0, "deadline of one Decide call (default 1s)")
	useCase := flag.String("use-case", "", "use case to decide for")
	unit := flag.String("unit", "go-smoke-unit", "unit id")
	outcome := flag.String("outcome", "purchase", "outcome name to log (empty: log none)")
	value := flag.Float64("value", 1, "outcome value")
	pause := flag.Bool("pause", false, "then wait for a line on stdin and decide again")
	feats := features{}
	flag.Var(feats, "feature", "a feature name=value (repeatable)")
	defs := defaults{}
	flag.Var(defs, "default", "a default action use_case=action for the local fallback (repeatable)")
	flag.Parse()
	if *useCase == "" {
		fail("-use-case is required")
	}
	cfg.Defaults = defs
	client, err := loopwise.New(cfg)
	if err != nil {
		fail("%v", err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	out := decide(ctx, client, *useCase, feats, *unit)
	if *outcome != "" {
		outcomes := []loopwise.Outcome{{UseCase: *useCase, DecisionID: out.DecisionID,
			OutcomeID: "go-smoke-" + out.DecisionID, Name: *outcome, Value: *value}}
		logged, err := client.LogOutcomes(ctx, outcomes)
		if err != nil {
			fail("LogOutcomes: %v", err)
		}
		// The same outcome id again must be a no-op (the idempotency contract).
		retried, err := client.LogOutcomes(ctx, outcomes)
		if err != nil {
			fail("LogOutcomes (again): %v", err)
		}
		out.Accepted, out.Duplicates, out.RetryAccepts = logged.Accepted, retried.Duplicates, retried.Accepted
	}
	emit(out)
	if *pause {
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			fail("reading stdin: %v", err)
		}
		emit(decide(ctx, client, *useCase, feats, *unit))
	}
}

func decide(ctx context.Context, client *loopwise.Client, useCase string, feats features, unit string) result {
	d, err := client.Decide(ctx, useCase, feats, unit)
	if err != nil {
		fail("Decide: %v", err)
	}
	probability, ok := d.Probabilities[d.Action]
	if d.DecisionID == "" || d.Action == "" || !ok {
		fail("Decide answered without a decision id, an action or its probability: %+v", d)
	}
	return result{DecisionID: d.DecisionID, Action: d.Action, ActionIndex: d.ActionIndex, Fallback: d.Fallback,
		Probability: probability, ModelVersion: d.ModelVersion}
}

func emit(r result) {
	line, _ := json.Marshal(r)
	fmt.Println(string(line))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "smoke: "+format+"\n", args...)
	os.Exit(1)
}
