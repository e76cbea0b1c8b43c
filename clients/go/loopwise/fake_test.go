package loopwise

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	commonv1 "github.com/loopwise/loopwise/clients/go/gen/loopwise/common/v1"
	decisionv1 "github.com/loopwise/loopwise/clients/go/gen/loopwise/decision/v1"
	feedbackv1 "github.com/loopwise/loopwise/clients/go/gen/loopwise/feedback/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// fake is a decision and a feedback service in one gRPC server on a loopback port,
// whose answers each test scripts.
type fake struct {
	decisionv1.UnimplementedDecisionServiceServer
	feedbackv1.UnimplementedFeedbackServiceServer

	server  *grpc.Server
	address string

	mu sync.Mutex
	// decide answers the n-th Decide call (from 0); nil: a decision of the use case.
	decide func(ctx context.Context, n int, r *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error)
	// logOutcomes answers the n-th LogOutcomes call; nil: every outcome accepted.
	logOutcomes   func(ctx context.Context, n int, r *feedbackv1.LogOutcomesRequest) (*feedbackv1.LogOutcomesResponse, error)
	decideTimes   []time.Time
	decideReqs    []*decisionv1.DecideRequest
	outcomeReqs   []*feedbackv1.LogOutcomesRequest
	getUseCases   int
	authorization []string
}

// startFake serves the fake on 127.0.0.1 (with TLS when creds is not nil).
func startFake(t *testing.T, creds credentials.TransportCredentials) *fake {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{address: listener.Addr().String()}
	var options []grpc.ServerOption
	if creds != nil {
		options = append(options, grpc.Creds(creds))
	}
	f.server = grpc.NewServer(options...)
	decisionv1.RegisterDecisionServiceServer(f.server, f)
	feedbackv1.RegisterFeedbackServiceServer(f.server, f)
	go func() { _ = f.server.Serve(listener) }()
	t.Cleanup(f.server.Stop)
	return f
}

// startTLSFake serves the fake with a TLS configuration.
func startTLSFake(t *testing.T, config *tls.Config) *fake {
	return startFake(t, credentials.NewTLS(config))
}

func (f *fake) noteAuthorization(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.authorization = append(f.authorization, md.Get("authorization")...)
}

// offerUseCase is the use case the fake knows: actions no/yes, default "no" at 0.25.
func offerUseCase() *decisionv1.UseCase {
	return &decisionv1.UseCase{Version: 3, Blueprint: &commonv1.Blueprint{
		UseCase: "offer", Actions: []string{"no", "yes"},
		DefaultDecision: &commonv1.DefaultDecision{Action: "no", Score: 0.25},
	}}
}

func served(useCase string) *decisionv1.DecideResponse {
	return &decisionv1.DecideResponse{Decision: &decisionv1.Decision{
		DecisionId: newUUID7(time.Now()), UseCase: useCase, Action: "yes", ActionIndex: 1, Score: 0.7,
		ActionProbabilities: []float64{0.2, 0.8}, ModelVersion: 4, BlueprintVersion: 3, Arm: "default",
	}}
}

func (f *fake) Decide(ctx context.Context, r *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
	f.mu.Lock()
	n := len(f.decideReqs)
	f.decideReqs = append(f.decideReqs, r)
	f.decideTimes = append(f.decideTimes, time.Now())
	f.noteAuthorization(ctx)
	answer := f.decide
	f.mu.Unlock()
	if answer != nil {
		return answer(ctx, n, r)
	}
	return served(r.GetUseCase()), nil
}

func (f *fake) GetUseCase(ctx context.Context, r *decisionv1.GetUseCaseRequest) (*decisionv1.GetUseCaseResponse, error) {
	f.mu.Lock()
	f.getUseCases++
	f.noteAuthorization(ctx)
	f.mu.Unlock()
	useCase := offerUseCase()
	useCase.Blueprint.UseCase = r.GetUseCase()
	return &decisionv1.GetUseCaseResponse{UseCase: useCase}, nil
}

func (f *fake) LogOutcomes(ctx context.Context, r *feedbackv1.LogOutcomesRequest) (*feedbackv1.LogOutcomesResponse, error) {
	f.mu.Lock()
	n := len(f.outcomeReqs)
	f.outcomeReqs = append(f.outcomeReqs, r)
	f.noteAuthorization(ctx)
	answer := f.logOutcomes
	f.mu.Unlock()
	if answer != nil {
		return answer(ctx, n, r)
	}
	return &feedbackv1.LogOutcomesResponse{Accepted: int32(len(r.GetOutcomes()))}, nil
}

func (f *fake) decideCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.decideReqs)
}

// gaps are the times between consecutive Decide calls.
func (f *fake) gaps() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Duration
	for i := 1; i < len(f.decideTimes); i++ {
		out = append(out, f.decideTimes[i].Sub(f.decideTimes[i-1]))
	}
	return out
}

// newClient is a plaintext client of the fake (TLS is tested on its own).
func newClient(t *testing.T, f *fake, cfg Config) *Client {
	t.Helper()
	cfg.DecisionAddress, cfg.FeedbackAddress, cfg.Insecure = f.address, f.address, true
	client, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// freeAddress is a loopback address where nothing listens.
func freeAddress(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := listener.Addr().String()
	_ = listener.Close()
	return address
}
