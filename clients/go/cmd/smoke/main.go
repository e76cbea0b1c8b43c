// Command smoke calls a running decision/feedback pair through the generated Go stubs:
// Decide for one unit, then LogOutcomes for that decision, and prints what it got as
// one JSON object. It exits non-zero when a call fails or an answer is inconsistent.
//
//	go run ./cmd/smoke -decision 127.0.0.1:50051 -feedback 127.0.0.1:50052 \
//	    -use-case checkout_upsell -feature basket_value=42.5 -feature device=mobile
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	decisionv1 "github.com/loopwise/loopwise/clients/go/gen/loopwise/decision/v1"
	feedbackv1 "github.com/loopwise/loopwise/clients/go/gen/loopwise/feedback/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// features collects repeated -feature name=value flags (numbers, else categories).
type features map[string]*decisionv1.FeatureValue

func (f features) String() string { return fmt.Sprint(len(f)) }

func (f features) Set(text string) error {
	name, value, ok := strings.Cut(text, "=")
	if !ok || name == "" {
		return fmt.Errorf("want name=value, got %q", text)
	}
	if number, err := strconv.ParseFloat(value, 64); err == nil {
		f[name] = &decisionv1.FeatureValue{Value: &decisionv1.FeatureValue_Number{Number: number}}
	} else {
		f[name] = &decisionv1.FeatureValue{Value: &decisionv1.FeatureValue_Category{Category: value}}
	}
	return nil
}

// result is what the program prints.
type result struct {
	DecisionID   string  `json:"decision_id"`
	Action       string  `json:"action"`
	Fallback     bool    `json:"fallback"`
	Probability  float64 `json:"probability"`
	Accepted     int32   `json:"accepted"`
	Duplicates   int32   `json:"duplicates"`
	RetryAccepts int32   `json:"retry_accepted"`
}

func main() {
	decisionAddr := flag.String("decision", "127.0.0.1:50051", "decision service host:port")
	feedbackAddr := flag.String("feedback", "127.0.0.1:50052", "feedback service host:port")
	useCase := flag.String("use-case", "", "use case to decide for")
	unit := flag.String("unit", "go-smoke-unit", "unit id")
	outcome := flag.String("outcome", "purchase", "outcome name to log")
	value := flag.Float64("value", 1, "outcome value")
	token := flag.String("token", os.Getenv("LOOPWISE_TOKEN"), "bearer token (optional)")
	feats := features{}
	flag.Var(feats, "feature", "a feature name=value (repeatable)")
	flag.Parse()
	if *useCase == "" {
		fail("-use-case is required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if *token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	}
	decisionConn := dial(*decisionAddr)
	defer decisionConn.Close()
	feedbackConn := dial(*feedbackAddr)
	defer feedbackConn.Close()

	decided, err := decisionv1.NewDecisionServiceClient(decisionConn).Decide(ctx, &decisionv1.DecideRequest{
		UseCase: *useCase, UnitId: *unit, Features: feats,
	})
	if err != nil {
		fail("Decide: %v", err)
	}
	d := decided.GetDecision()
	if d.GetDecisionId() == "" || d.GetAction() == "" {
		fail("Decide answered without a decision id or action: %v", d)
	}
	probabilities := d.GetActionProbabilities()
	index := int(d.GetActionIndex())
	if index < 0 || index >= len(probabilities) {
		fail("action index %d outside the %d action probabilities", index, len(probabilities))
	}

	request := &feedbackv1.LogOutcomesRequest{
		RequestId: "go-smoke-" + d.GetDecisionId(),
		Outcomes: []*feedbackv1.Outcome{{
			UseCase: *useCase, DecisionId: d.GetDecisionId(), OutcomeId: "go-smoke-" + d.GetDecisionId(),
			Name: *outcome, Value: *value,
		}},
	}
	feedback := feedbackv1.NewFeedbackServiceClient(feedbackConn)
	logged, err := feedback.LogOutcomes(ctx, request)
	if err != nil {
		fail("LogOutcomes: %v", err)
	}
	// The same outcome id again must be a no-op (the idempotency contract).
	retried, err := feedback.LogOutcomes(ctx, request)
	if err != nil {
		fail("LogOutcomes (retry): %v", err)
	}
	out, _ := json.Marshal(result{
		DecisionID: d.GetDecisionId(), Action: d.GetAction(), Fallback: d.GetFallback(),
		Probability: probabilities[index], Accepted: logged.GetAccepted(),
		Duplicates: retried.GetDuplicates(), RetryAccepts: retried.GetAccepted(),
	})
	fmt.Println(string(out))
}

func dial(address string) *grpc.ClientConn {
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("dial %s: %v", address, err)
	}
	return conn
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "smoke: "+format+"\n", args...)
	os.Exit(1)
}
