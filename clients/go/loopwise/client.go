package loopwise

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	decisionv1 "github.com/loopwise/loopwise/clients/go/gen/loopwise/decision/v1"
	feedbackv1 "github.com/loopwise/loopwise/clients/go/gen/loopwise/feedback/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// outcomeBatch is the most outcomes sent in one LogOutcomes call.
const outcomeBatch = 5000

// Decision is one decision, as Decide returns it.
type Decision struct {
	// DecisionID is a UUIDv7; its timestamp is the decision time.
	DecisionID string
	UseCase    string
	// Action is the chosen action, ActionIndex its index in the use case's actions.
	Action      string
	ActionIndex int
	// Score is the model's score (the default decision's score on fallback).
	Score float64
	// Probabilities maps every action to its probability under the policy that chose.
	Probabilities map[string]float64
	// ActionScores maps actions to their scores (multiclass and action-value use cases).
	ActionScores map[string]float64
	// ModelVersion is the model that scored (0: none); BlueprintVersion the blueprint used.
	ModelVersion     int64
	BlueprintVersion int64
	// Arm is the unit's experiment arm.
	Arm string
	// Explored is set when the action was chosen by exploration.
	Explored bool
	// Fallback is set when the default decision was returned: by the service (no model,
	// kill switch), or locally by the client when loopwise could not be reached.
	Fallback bool
}

// Time is the decision time (the UUIDv7 timestamp of the id).
func (d Decision) Time() time.Time {
	t, _ := uuid7Time(d.DecisionID)
	return t
}

// Outcome is an outcome to log. OutcomeID is the idempotency key: logging the same
// outcome id again is a no-op.
type Outcome struct {
	UseCase    string
	DecisionID string
	OutcomeID  string
	// Name is the outcome's name (e.g. "purchase"), Value its value (1 for a click,
	// an amount for a purchase).
	Name  string
	Value float64
	// Label is the observed class, for multiclass use cases.
	Label string
	// EventTime is when it happened; zero: the server's now.
	EventTime time.Time
}

// LogResult counts what LogOutcomes stored.
type LogResult struct {
	// Accepted outcomes were stored for the first time; Duplicates were already stored
	// (same outcome id); Orphans name a decision id that is not a plausible UUIDv7.
	Accepted   int
	Duplicates int
	Orphans    int
}

// UseCaseDefault is what the client needs to answer locally for a use case.
type UseCaseDefault struct {
	Action           string
	Score            float64
	Actions          []string
	BlueprintVersion int64
}

// DecideOption changes one Decide call.
type DecideOption func(*decisionv1.DecideRequest)

// WithoutExploration switches exploration off for this call (greedy choice).
func WithoutExploration() DecideOption {
	return func(r *decisionv1.DecideRequest) { r.DisableExploration = true }
}

// WithArm forces an experiment arm (for testing a treatment).
func WithArm(arm string) DecideOption {
	return func(r *decisionv1.DecideRequest) { r.Arm = arm }
}

// Client calls the decision and feedback services. It is safe for concurrent use.
type Client struct {
	deadline time.Duration
	retries  int
	given    map[string]string

	decisionConn *grpc.ClientConn
	feedbackConn *grpc.ClientConn
	decision     decisionv1.DecisionServiceClient
	feedback     feedbackv1.FeedbackServiceClient

	mu      sync.RWMutex
	learned map[string]UseCaseDefault

	// random gives the jitter of the waits; now the local clock of fallback ids.
	random func() float64
	now    func() time.Time
}

// New opens the connections to the decision and feedback services (lazily: nothing is
// dialled before the first call). It fails only on a configuration that cannot be used
// (a missing certificate file, a key without a certificate).
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	creds, err := cfg.transportCredentials()
	if err != nil {
		return nil, err
	}
	options := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
	}
	if cfg.Token != "" {
		options = append(options, grpc.WithChainUnaryInterceptor(bearer(cfg.Token)),
			grpc.WithChainStreamInterceptor(bearerStream(cfg.Token)))
	}
	options = append(options, cfg.DialOptions...)
	decisionConn, err := grpc.NewClient(cfg.DecisionAddress, options...)
	if err != nil {
		return nil, &ConfigError{Field: "DecisionAddress", Reason: err.Error()}
	}
	feedbackConn, err := grpc.NewClient(cfg.FeedbackAddress, options...)
	if err != nil {
		_ = decisionConn.Close()
		return nil, &ConfigError{Field: "FeedbackAddress", Reason: err.Error()}
	}
	return &Client{
		deadline: cfg.Deadline, retries: cfg.Retries, given: cfg.Defaults,
		decisionConn: decisionConn, feedbackConn: feedbackConn,
		decision: decisionv1.NewDecisionServiceClient(decisionConn),
		feedback: feedbackv1.NewFeedbackServiceClient(feedbackConn),
		learned:  map[string]UseCaseDefault{},
		random:   jitter, now: time.Now,
	}, nil
}

// bearer adds the token to the metadata of every unary call.
func bearer(token string) grpc.UnaryClientInterceptor {
	value := "Bearer " + token
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", value), method, req, reply, cc, opts...)
	}
}

// bearerStream adds the token to the metadata of every streaming call.
func bearerStream(token string) grpc.StreamClientInterceptor {
	value := "Bearer " + token
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(metadata.AppendToOutgoingContext(ctx, "authorization", value), desc, cc, method, opts...)
	}
}

// DecisionService is the decision service's generated client over this client's
// connection (TLS and token included), for the RPCs this package does not wrap.
func (c *Client) DecisionService() decisionv1.DecisionServiceClient { return c.decision }

// FeedbackService is the feedback service's generated client over this client's
// connection.
func (c *Client) FeedbackService() feedbackv1.FeedbackServiceClient { return c.feedback }

// Close closes both connections.
func (c *Client) Close() error {
	return errors.Join(c.decisionConn.Close(), c.feedbackConn.Close())
}

// call makes one RPC within timeout, retries included (see retryDelay). do makes one
// attempt with the given call options (they capture the trailer).
func (c *Client) call(ctx context.Context, method string, timeout time.Duration,
	do func(ctx context.Context, opts ...grpc.CallOption) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	for attempt := 0; ; attempt++ {
		var trailer metadata.MD
		err := do(ctx, grpc.Trailer(&trailer))
		if err == nil {
			return nil
		}
		st := status.Convert(err)
		pushback, hasPushback := pushbackOf(trailer, st)
		delay, retry := retryDelay(st.Code(), pushback, hasPushback, attempt, c.retries, time.Until(deadline), c.random)
		if !retry {
			return newError(method, st, attempt+1, pushback, hasPushback)
		}
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return newError(method, status.FromContextError(ctx.Err()), attempt+1, pushback, hasPushback)
		}
	}
}

func (c *Client) bulkDeadline() time.Duration { return max(c.deadline, BulkDeadline) }

// Decide decides for one unit from named features: numbers (any integer or float
// type), category strings, bools (as 0/1) and nil (missing). The call and its retries
// take at most Config.Deadline (and never outlive ctx).
//
// When the decision service cannot be reached or is shedding load, Decide returns the
// use case's default decision with Fallback set and a local UUIDv7 id; with no default
// known it returns a *DecisionUnavailableError (errors.Is(err, ErrDecisionUnavailable)).
// Any other failure (bad input, unknown use case, a token without the scope) is an
// *Error and never falls back.
func (c *Client) Decide(ctx context.Context, useCase string, features map[string]any, unitID string,
	opts ...DecideOption) (Decision, error) {
	request, err := decideRequest(useCase, features, unitID)
	if err != nil {
		return Decision{}, err
	}
	for _, opt := range opts {
		opt(request)
	}
	var reply *decisionv1.DecideResponse
	err = c.call(ctx, "Decide", c.deadline, func(ctx context.Context, opts ...grpc.CallOption) error {
		var callErr error
		reply, callErr = c.decision.Decide(ctx, request, opts...)
		return callErr
	})
	if err != nil {
		var failed *Error
		if errors.As(err, &failed) && failed.unreachable() {
			return c.localDecision(useCase, failed)
		}
		return Decision{}, err
	}
	c.remember(ctx, useCase)
	return decisionFromProto(reply.GetDecision(), c.actionsOf(useCase)), nil
}

// GetUseCase reads the latest version of a use case and caches its default decision
// for the local fallback.
func (c *Client) GetUseCase(ctx context.Context, useCase string) (*decisionv1.UseCase, error) {
	return c.getUseCase(ctx, useCase, c.bulkDeadline())
}

func (c *Client) getUseCase(ctx context.Context, useCase string, timeout time.Duration) (*decisionv1.UseCase, error) {
	var reply *decisionv1.GetUseCaseResponse
	err := c.call(ctx, "GetUseCase", timeout, func(ctx context.Context, opts ...grpc.CallOption) error {
		var callErr error
		reply, callErr = c.decision.GetUseCase(ctx, &decisionv1.GetUseCaseRequest{UseCase: useCase}, opts...)
		return callErr
	})
	if err != nil {
		return nil, err
	}
	c.learn(reply.GetUseCase())
	return reply.GetUseCase(), nil
}

// LogOutcomes logs outcomes (in batches of 5,000) and returns the summed counts.
// Retrying is safe: an outcome id already stored counts as a duplicate.
func (c *Client) LogOutcomes(ctx context.Context, outcomes []Outcome) (LogResult, error) {
	var total LogResult
	messages := make([]*feedbackv1.Outcome, len(outcomes))
	for i, o := range outcomes {
		messages[i] = &feedbackv1.Outcome{UseCase: o.UseCase, DecisionId: o.DecisionID, OutcomeId: o.OutcomeID,
			Name: o.Name, Value: o.Value, Label: o.Label}
		if !o.EventTime.IsZero() {
			messages[i].EventTime = timestamppb.New(o.EventTime)
		}
	}
	for start := 0; start < len(messages); start += outcomeBatch {
		request := &feedbackv1.LogOutcomesRequest{RequestId: newUUID7(c.now()),
			Outcomes: messages[start:min(start+outcomeBatch, len(messages))]}
		var reply *feedbackv1.LogOutcomesResponse
		err := c.call(ctx, "LogOutcomes", c.bulkDeadline(), func(ctx context.Context, opts ...grpc.CallOption) error {
			var callErr error
			reply, callErr = c.feedback.LogOutcomes(ctx, request, opts...)
			return callErr
		})
		if err != nil {
			return total, err
		}
		total.Accepted += int(reply.GetAccepted())
		total.Duplicates += int(reply.GetDuplicates())
		total.Orphans += int(reply.GetOrphans())
	}
	return total, nil
}

// DefaultFor is the default decision the client would answer with locally for a use
// case, if one is known: given in Config.Defaults, else learned from GetUseCase.
func (c *Client) DefaultFor(useCase string) (UseCaseDefault, bool) {
	c.mu.RLock()
	learned, isLearned := c.learned[useCase]
	c.mu.RUnlock()
	if given, ok := c.given[useCase]; ok {
		actions := []string{given}
		if isLearned && slices.Contains(learned.Actions, given) {
			actions = learned.Actions
		}
		return UseCaseDefault{Action: given, Actions: actions}, true
	}
	return learned, isLearned
}

func (c *Client) learn(useCase *decisionv1.UseCase) {
	blueprint := useCase.GetBlueprint()
	if blueprint.GetUseCase() == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.learned[blueprint.GetUseCase()] = UseCaseDefault{
		Action: blueprint.GetDefaultDecision().GetAction(), Score: blueprint.GetDefaultDecision().GetScore(),
		Actions: slices.Clone(blueprint.GetActions()), BlueprintVersion: useCase.GetVersion(),
	}
}

// remember learns the default decision at the first successful contact (best effort,
// within the decide deadline: a slow answer is learned at a later contact).
func (c *Client) remember(ctx context.Context, useCase string) {
	c.mu.RLock()
	_, known := c.learned[useCase]
	c.mu.RUnlock()
	if !known {
		_, _ = c.getUseCase(ctx, useCase, c.deadline)
	}
}

func (c *Client) actionsOf(useCase string) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.learned[useCase].Actions
}

func (c *Client) localDecision(useCase string, failed *Error) (Decision, error) {
	def, ok := c.DefaultFor(useCase)
	if !ok {
		return Decision{}, &DecisionUnavailableError{UseCase: useCase, Err: failed}
	}
	actions := def.Actions
	if len(actions) == 0 {
		actions = []string{def.Action}
	}
	probabilities := make(map[string]float64, len(actions))
	for _, a := range actions {
		probabilities[a] = 0
	}
	probabilities[def.Action] = 1
	return Decision{
		DecisionID: newUUID7(c.now()), UseCase: useCase, Action: def.Action,
		ActionIndex: max(slices.Index(actions, def.Action), 0), Score: def.Score,
		Probabilities: probabilities, ActionScores: map[string]float64{},
		BlueprintVersion: def.BlueprintVersion, Fallback: true,
	}, nil
}

func decideRequest(useCase string, features map[string]any, unitID string) (*decisionv1.DecideRequest, error) {
	values := make(map[string]*decisionv1.FeatureValue, len(features))
	for name, value := range features {
		fv, err := featureValue(name, value)
		if err != nil {
			return nil, err
		}
		values[name] = fv
	}
	return &decisionv1.DecideRequest{UseCase: useCase, UnitId: unitID, Features: values}, nil
}

func featureValue(name string, value any) (*decisionv1.FeatureValue, error) {
	number := func(x float64) *decisionv1.FeatureValue {
		return &decisionv1.FeatureValue{Value: &decisionv1.FeatureValue_Number{Number: x}}
	}
	switch v := value.(type) {
	case nil:
		return &decisionv1.FeatureValue{}, nil
	case string:
		return &decisionv1.FeatureValue{Value: &decisionv1.FeatureValue_Category{Category: v}}, nil
	case bool:
		if v {
			return number(1), nil
		}
		return number(0), nil
	case *decisionv1.FeatureValue:
		return v, nil
	}
	rv := reflect.ValueOf(value)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return number(float64(rv.Int())), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return number(float64(rv.Uint())), nil
	case reflect.Float32, reflect.Float64:
		return number(rv.Float()), nil
	case reflect.String:
		return &decisionv1.FeatureValue{Value: &decisionv1.FeatureValue_Category{Category: rv.String()}}, nil
	case reflect.Pointer:
		if rv.IsNil() {
			return &decisionv1.FeatureValue{}, nil
		}
		return featureValue(name, rv.Elem().Interface())
	}
	return nil, &FeatureError{Name: name, Value: value}
}

// decisionFromProto names the probabilities by the use case's actions when they are
// known and match the answer; else by the action (one probability) or by index.
func decisionFromProto(d *decisionv1.Decision, actions []string) Decision {
	probs := d.GetActionProbabilities()
	index := int(d.GetActionIndex())
	if len(actions) != len(probs) || (index < len(actions) && actions[index] != d.GetAction()) {
		actions = nil
	}
	names := actions
	if names == nil {
		if len(probs) == 1 {
			names = []string{d.GetAction()}
		} else {
			names = make([]string, len(probs))
			for i := range probs {
				names[i] = fmt.Sprint(i)
			}
		}
	}
	probabilities := make(map[string]float64, len(probs))
	for i, p := range probs {
		probabilities[names[i]] = p
	}
	scores := map[string]float64{}
	for i, s := range d.GetActionScores() {
		if i < len(names) {
			scores[names[i]] = s
		}
	}
	return Decision{
		DecisionID: d.GetDecisionId(), UseCase: d.GetUseCase(), Action: d.GetAction(), ActionIndex: index,
		Score: d.GetScore(), Probabilities: probabilities, ActionScores: scores,
		ModelVersion: d.GetModelVersion(), BlueprintVersion: d.GetBlueprintVersion(), Arm: d.GetArm(),
		Explored: d.GetExplored(), Fallback: d.GetFallback(),
	}
}
