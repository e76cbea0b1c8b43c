package loopwise

import (
	"context"
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	decisionv1 "github.com/loopwise/loopwise/clients/go/gen/loopwise/decision/v1"
	feedbackv1 "github.com/loopwise/loopwise/clients/go/gen/loopwise/feedback/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

var uuid7Pattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func unavailable() error { return status.Error(codes.Unavailable, "overloaded link") }

// shed answers RESOURCE_EXHAUSTED with a pushback trailer.
func shed(ctx context.Context, ms string) error {
	_ = grpc.SetTrailer(ctx, metadata.Pairs(PushbackKey, ms))
	return status.Error(codes.ResourceExhausted, "shedding load; retry in "+ms+" ms")
}

func TestDecideSendsFeaturesAndTokenAndLearnsTheDefault(t *testing.T) {
	f := startFake(t, nil)
	client := newClient(t, f, Config{Token: "lw_secret"})
	ratio := float32(0.5)
	d, err := client.Decide(context.Background(), "offer", map[string]any{
		"x": 1.5, "n": 3, "u": uint8(7), "r": &ratio, "mobile": true, "country": "de", "missing": nil,
	}, "unit-1", WithoutExploration(), WithArm("treatment"))
	if err != nil {
		t.Fatal(err)
	}
	request := f.decideReqs[0]
	if request.GetUseCase() != "offer" || request.GetUnitId() != "unit-1" || !request.GetDisableExploration() ||
		request.GetArm() != "treatment" {
		t.Fatalf("request %v", request)
	}
	numbers := map[string]float64{"x": 1.5, "n": 3, "u": 7, "r": 0.5, "mobile": 1}
	for name, want := range numbers {
		if got := request.GetFeatures()[name].GetNumber(); got != want {
			t.Errorf("feature %s: %v, want %v", name, got, want)
		}
	}
	if request.GetFeatures()["country"].GetCategory() != "de" || request.GetFeatures()["missing"].GetValue() != nil {
		t.Errorf("features %v", request.GetFeatures())
	}
	for _, value := range f.authorization {
		if value != "Bearer lw_secret" {
			t.Errorf("authorization %q", value)
		}
	}
	if len(f.authorization) != 2 || f.getUseCases != 1 {
		t.Fatalf("authorization %v, GetUseCase calls %d: the first contact learns the use case", f.authorization, f.getUseCases)
	}
	want := map[string]float64{"no": 0.2, "yes": 0.8}
	if d.Action != "yes" || d.ActionIndex != 1 || d.Fallback || d.ModelVersion != 4 || len(d.Probabilities) != 2 ||
		d.Probabilities["no"] != want["no"] || d.Probabilities["yes"] != want["yes"] {
		t.Fatalf("decision %+v", d)
	}
	if since := time.Since(d.Time()); since < 0 || since > time.Minute {
		t.Fatalf("decision time %v", d.Time())
	}
	def, ok := client.DefaultFor("offer")
	if !ok || def.Action != "no" || def.Score != 0.25 || def.BlueprintVersion != 3 || strings.Join(def.Actions, ",") != "no,yes" {
		t.Fatalf("learned default %+v %v", def, ok)
	}
	// Known now: no second GetUseCase.
	if _, err := client.Decide(context.Background(), "offer", nil, ""); err != nil || f.getUseCases != 1 {
		t.Fatalf("second decide: %v, GetUseCase calls %d", err, f.getUseCases)
	}
}

func TestDecideRetriesUnavailableWithBackoff(t *testing.T) {
	f := startFake(t, nil)
	f.decide = func(ctx context.Context, n int, r *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
		if n < 2 {
			return nil, unavailable()
		}
		return served(r.GetUseCase()), nil
	}
	client := newClient(t, f, Config{Deadline: 2 * time.Second})
	d, err := client.Decide(context.Background(), "offer", nil, "u")
	if err != nil || d.Fallback {
		t.Fatalf("decide: %+v, %v", d, err)
	}
	gaps := f.gaps()
	if f.decideCalls() != 3 || len(gaps) != 2 {
		t.Fatalf("%d calls, want 3", f.decideCalls())
	}
	// Attempt n waits in [50ms*2^n/2, 50ms*2^n]: [25, 50] then [50, 100] ms.
	if gaps[0] < 25*time.Millisecond || gaps[1] < 50*time.Millisecond || gaps[1] > time.Second {
		t.Fatalf("backoff gaps %v", gaps)
	}
}

func TestRetriesAreBounded(t *testing.T) {
	f := startFake(t, nil)
	f.decide = func(context.Context, int, *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
		return nil, unavailable()
	}
	client := newClient(t, f, Config{Deadline: 5 * time.Second, Retries: 4})
	_, err := client.Decide(context.Background(), "offer", nil, "u")
	var failed *Error
	if !errors.Is(err, ErrDecisionUnavailable) || !errors.As(err, &failed) || failed.Code != codes.Unavailable ||
		failed.Attempts != 5 || f.decideCalls() != 5 || !failed.Retryable() {
		t.Fatalf("error %v (%+v), %d calls; want DecisionUnavailable after 5 attempts", err, failed, f.decideCalls())
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("status.Code %v", status.Code(err))
	}
	// Retries < 0: a single attempt.
	f2 := startFake(t, nil)
	f2.decide = f.decide
	single := newClient(t, f2, Config{Retries: -1})
	if _, err := single.Decide(context.Background(), "offer", nil, "u"); err == nil || f2.decideCalls() != 1 {
		t.Fatalf("Retries -1: %v, %d calls", err, f2.decideCalls())
	}
}

func TestInvalidArgumentIsNeverRetriedNorFallenBackFrom(t *testing.T) {
	f := startFake(t, nil)
	f.decide = func(context.Context, int, *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
		st, _ := status.New(codes.InvalidArgument, "feature 'x': not a number").WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "features.x", Description: "not a number"}}})
		return nil, st.Err()
	}
	client := newClient(t, f, Config{Defaults: map[string]string{"offer": "no"}})
	d, err := client.Decide(context.Background(), "offer", map[string]any{"x": "abc"}, "u")
	var failed *Error
	if !errors.As(err, &failed) || failed.Code != codes.InvalidArgument || failed.Attempts != 1 || d.Fallback {
		t.Fatalf("decide: %+v, %v", d, err)
	}
	if f.decideCalls() != 1 || failed.Retryable() || errors.Is(err, ErrDecisionUnavailable) {
		t.Fatalf("%d calls", f.decideCalls())
	}
	if len(failed.Violations) != 1 || failed.Violations[0].Field != "features.x" {
		t.Fatalf("violations %+v", failed.Violations)
	}
	if !strings.Contains(err.Error(), "InvalidArgument") || !strings.Contains(err.Error(), "feature 'x'") {
		t.Fatalf("message %q", err)
	}
	for _, code := range []codes.Code{codes.NotFound, codes.PermissionDenied, codes.Unauthenticated, codes.Internal} {
		f := startFake(t, nil)
		f.decide = func(context.Context, int, *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
			return nil, status.Error(code, "no")
		}
		client := newClient(t, f, Config{Defaults: map[string]string{"offer": "no"}})
		if _, err := client.Decide(context.Background(), "offer", nil, "u"); status.Code(err) != code || f.decideCalls() != 1 {
			t.Errorf("%v: %v after %d calls", code, err, f.decideCalls())
		}
	}
}

func TestPushbackTrailerIsHonoured(t *testing.T) {
	f := startFake(t, nil)
	f.decide = func(ctx context.Context, n int, r *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
		if n == 0 {
			return nil, shed(ctx, "150")
		}
		return served(r.GetUseCase()), nil
	}
	client := newClient(t, f, Config{Deadline: 3 * time.Second})
	if d, err := client.Decide(context.Background(), "offer", nil, "u"); err != nil || d.Fallback {
		t.Fatalf("decide: %+v %v", d, err)
	}
	gaps := f.gaps()
	// At least the pushback, at most 1.5 times it (plus scheduling).
	if len(gaps) != 1 || gaps[0] < 150*time.Millisecond || gaps[0] > 225*time.Millisecond+200*time.Millisecond {
		t.Fatalf("gaps %v", gaps)
	}
}

func TestRetryInfoPushbackIsHonoured(t *testing.T) {
	f := startFake(t, nil)
	f.decide = func(ctx context.Context, n int, r *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
		if n == 0 {
			st, _ := status.New(codes.ResourceExhausted, "rate limit").WithDetails(
				&errdetails.RetryInfo{RetryDelay: durationpb.New(120 * time.Millisecond)})
			return nil, st.Err()
		}
		return served(r.GetUseCase()), nil
	}
	client := newClient(t, f, Config{Deadline: 3 * time.Second})
	if _, err := client.Decide(context.Background(), "offer", nil, "u"); err != nil {
		t.Fatal(err)
	}
	if gaps := f.gaps(); len(gaps) != 1 || gaps[0] < 120*time.Millisecond {
		t.Fatalf("gaps %v", gaps)
	}
}

func TestResourceExhaustedWithoutPushbackIsFinal(t *testing.T) {
	f := startFake(t, nil)
	f.decide = func(context.Context, int, *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
		return nil, status.Error(codes.ResourceExhausted, "message larger than max")
	}
	client := newClient(t, f, Config{Defaults: map[string]string{"offer": "no"}})
	d, err := client.Decide(context.Background(), "offer", nil, "u")
	var failed *Error
	if !errors.As(err, &failed) || failed.Code != codes.ResourceExhausted || failed.HasPushback || d.Fallback ||
		f.decideCalls() != 1 {
		t.Fatalf("decide: %+v %v after %d calls", d, err, f.decideCalls())
	}
}

func TestNegativePushbackStopsRetriesAndFallsBack(t *testing.T) {
	for _, value := range []string{"-1", "soon"} {
		f := startFake(t, nil)
		f.decide = func(ctx context.Context, _ int, _ *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
			return nil, shed(ctx, value)
		}
		client := newClient(t, f, Config{Defaults: map[string]string{"offer": "no"}})
		d, err := client.Decide(context.Background(), "offer", nil, "u")
		if err != nil || !d.Fallback || d.Action != "no" || f.decideCalls() != 1 {
			t.Fatalf("pushback %q: %+v %v after %d calls", value, d, err, f.decideCalls())
		}
	}
}

func TestPushbackBeyondTheDeadlineFallsBackAtOnce(t *testing.T) {
	f := startFake(t, nil)
	f.decide = func(ctx context.Context, _ int, _ *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
		return nil, shed(ctx, "5000")
	}
	client := newClient(t, f, Config{Deadline: 300 * time.Millisecond, Defaults: map[string]string{"offer": "yes"}})
	start := time.Now()
	d, err := client.Decide(context.Background(), "offer", nil, "u")
	if err != nil || !d.Fallback || d.Action != "yes" || f.decideCalls() != 1 || time.Since(start) > 250*time.Millisecond {
		t.Fatalf("%+v %v after %d calls in %v", d, err, f.decideCalls(), time.Since(start))
	}
}

func TestFallbackToTheLearnedDefaultWhenTheServiceStops(t *testing.T) {
	f := startFake(t, nil)
	client := newClient(t, f, Config{})
	if _, err := client.Decide(context.Background(), "offer", nil, "u"); err != nil {
		t.Fatal(err)
	}
	f.server.Stop()
	start := time.Now()
	d, err := client.Decide(context.Background(), "offer", map[string]any{"x": 1}, "u")
	if err != nil {
		t.Fatal(err)
	}
	if !d.Fallback || d.Action != "no" || d.ActionIndex != 0 || d.Score != 0.25 || d.BlueprintVersion != 3 ||
		d.ModelVersion != 0 || d.Probabilities["no"] != 1 || d.Probabilities["yes"] != 0 || len(d.Probabilities) != 2 {
		t.Fatalf("fallback %+v", d)
	}
	if !uuid7Pattern.MatchString(d.DecisionID) || time.Since(d.Time()) > time.Minute || d.Time().Before(start.Add(-time.Second)) {
		t.Fatalf("local id %s at %v", d.DecisionID, d.Time())
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("the fallback took %v", elapsed)
	}
}

func TestFallbackToAGivenDefaultWithoutAnyContact(t *testing.T) {
	nowhere := freeAddress(t)
	client, err := New(Config{DecisionAddress: nowhere, FeedbackAddress: nowhere, Insecure: true,
		Defaults: map[string]string{"offer": "no_offer"}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	d, err := client.Decide(context.Background(), "offer", nil, "u")
	if err != nil || !d.Fallback || d.Action != "no_offer" || d.Probabilities["no_offer"] != 1 || d.Score != 0 {
		t.Fatalf("%+v %v", d, err)
	}
	// Another use case has no default: the caller learns why.
	_, err = client.Decide(context.Background(), "other", nil, "u")
	var unavailable *DecisionUnavailableError
	if !errors.Is(err, ErrDecisionUnavailable) || !errors.As(err, &unavailable) || unavailable.UseCase != "other" ||
		unavailable.Err.Code != codes.Unavailable || unavailable.Err.Attempts != 3 {
		t.Fatalf("error %v", err)
	}
	if !strings.Contains(err.Error(), `use case "other"`) {
		t.Fatalf("message %q", err)
	}
}

func TestTheDeadlineBoundsDecideAndFallsBack(t *testing.T) {
	f := startFake(t, nil)
	f.decide = func(ctx context.Context, _ int, _ *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	client := newClient(t, f, Config{Deadline: 200 * time.Millisecond, Defaults: map[string]string{"offer": "no"}})
	start := time.Now()
	d, err := client.Decide(context.Background(), "offer", nil, "u")
	if elapsed := time.Since(start); err != nil || !d.Fallback || elapsed < 190*time.Millisecond || elapsed > 700*time.Millisecond {
		t.Fatalf("%+v %v in %v", d, err, elapsed)
	}
	if f.decideCalls() != 1 {
		t.Fatalf("DEADLINE_EXCEEDED is not retried: %d calls", f.decideCalls())
	}
	// A caller's cancellation is not a fallback.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if _, err := client.Decide(ctx, "offer", nil, "u"); status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestLogOutcomesBatchesAndRetries(t *testing.T) {
	f := startFake(t, nil)
	f.logOutcomes = func(_ context.Context, n int, r *feedbackv1.LogOutcomesRequest) (*feedbackv1.LogOutcomesResponse, error) {
		if n == 0 {
			return nil, unavailable()
		}
		return &feedbackv1.LogOutcomesResponse{Accepted: int32(len(r.GetOutcomes())) - 1, Duplicates: 1}, nil
	}
	client := newClient(t, f, Config{Token: "lw_t"})
	when := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	outcomes := make([]Outcome, 5001)
	for i := range outcomes {
		outcomes[i] = Outcome{UseCase: "offer", DecisionID: newUUID7(when), OutcomeID: "o", Name: "purchase", Value: 2.5}
	}
	outcomes[5000].EventTime = when
	outcomes[5000].Label = "yes"
	result, err := client.LogOutcomes(context.Background(), outcomes)
	if err != nil {
		t.Fatal(err)
	}
	if result != (LogResult{Accepted: 4999 + 0, Duplicates: 2}) {
		t.Fatalf("result %+v", result)
	}
	if len(f.outcomeReqs) != 3 || len(f.outcomeReqs[1].GetOutcomes()) != 5000 || len(f.outcomeReqs[2].GetOutcomes()) != 1 {
		t.Fatalf("%d requests", len(f.outcomeReqs))
	}
	// The retry repeats the batch with its request id; the next batch has its own.
	first, retried, second := f.outcomeReqs[0].GetRequestId(), f.outcomeReqs[1].GetRequestId(), f.outcomeReqs[2].GetRequestId()
	if first != retried || first == second || !uuid7Pattern.MatchString(second) {
		t.Fatalf("request ids %s %s %s", first, retried, second)
	}
	last := f.outcomeReqs[2].GetOutcomes()[0]
	if !last.GetEventTime().AsTime().Equal(when) || last.GetLabel() != "yes" || last.GetValue() != 2.5 ||
		f.outcomeReqs[1].GetOutcomes()[0].GetEventTime() != nil {
		t.Fatalf("outcome %v", last)
	}
	if len(f.authorization) != 3 {
		t.Fatalf("authorization %v", f.authorization)
	}
	// A refusal is returned as is.
	f.logOutcomes = func(context.Context, int, *feedbackv1.LogOutcomesRequest) (*feedbackv1.LogOutcomesResponse, error) {
		return nil, status.Error(codes.InvalidArgument, "outcomes[0].name: empty")
	}
	if _, err := client.LogOutcomes(context.Background(), outcomes[:1]); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("refusal: %v", err)
	}
}

func TestFeatureValues(t *testing.T) {
	type custom int16
	for _, value := range []any{int64(-2), uint32(5), float32(0.25), custom(4), math.NaN()} {
		if fv, err := featureValue("f", value); err != nil || fv.GetValue() == nil {
			t.Errorf("%T: %v %v", value, fv, err)
		}
	}
	var nothing *float64
	if fv, err := featureValue("f", nothing); err != nil || fv.GetValue() != nil {
		t.Errorf("nil pointer: %v %v", fv, err)
	}
	_, err := featureValue("basket", []int{1})
	var bad *FeatureError
	if !errors.As(err, &bad) || bad.Name != "basket" {
		t.Fatalf("error %v", err)
	}
	client := &Client{}
	if _, err := client.Decide(context.Background(), "offer", map[string]any{"when": time.Now()}, ""); !errors.As(err, &bad) {
		t.Fatalf("decide with a bad feature: %v", err)
	}
}

func TestDecisionNames(t *testing.T) {
	proto := &decisionv1.Decision{Action: "b", ActionIndex: 1, ActionProbabilities: []float64{0.1, 0.9},
		ActionScores: []float64{0.3, 0.6}}
	if d := decisionFromProto(proto, []string{"a", "b"}); d.Probabilities["b"] != 0.9 || d.ActionScores["a"] != 0.3 {
		t.Fatalf("%+v", d)
	}
	// Actions that do not match the answer (a newer blueprint): by index.
	if d := decisionFromProto(proto, []string{"a", "c"}); d.Probabilities["1"] != 0.9 {
		t.Fatalf("%+v", d)
	}
	single := &decisionv1.Decision{Action: "only", ActionProbabilities: []float64{1}}
	if d := decisionFromProto(single, nil); d.Probabilities["only"] != 1 {
		t.Fatalf("%+v", d)
	}
}
