// Package loopwise is the Go client of loopwise: how a product backend decides and
// logs outcomes.
//
// It behaves like the Python SDK (lib/loopwise/client.py):
//
//   - every call has a deadline that bounds the call and its retries together (1 s for
//     Decide by default, at least 30 s for LogOutcomes and GetUseCase);
//   - a call is retried only after UNAVAILABLE, or RESOURCE_EXHAUSTED that carries retry
//     pushback (a server shedding load: the grpc-retry-pushback-ms trailer or a
//     google.rpc.RetryInfo detail). The client waits at least the pushback the server
//     asked for (up to 1.5 times it, at random), or exponential backoff with jitter
//     without one; it never retries when the server asked for no retry, when the wait
//     would leave no time for another attempt, or after any other code
//     (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, ...);
//   - when the decision service cannot be reached or is shedding load (UNAVAILABLE,
//     DEADLINE_EXCEEDED, or RESOURCE_EXHAUSTED with pushback, after the retries),
//     Decide returns the use case's default decision, with Fallback set and a locally
//     made UUIDv7 id. The default is learned from GetUseCase at the first successful
//     contact with a use case, or given in Config.Defaults;
//   - mutual TLS (CA, client certificate and key, server name override) and a bearer
//     token sent as "authorization: Bearer <token>" on every call.
//
// A client is safe for concurrent use; make one per process and Close it at the end:
//
//	client, err := loopwise.New(loopwise.Config{
//		DecisionAddress: "loopwise-decision.loopwise.svc:50051",
//		FeedbackAddress: "loopwise-feedback.loopwise.svc:50052",
//		CAFile:          "/etc/loopwise/ca.crt",
//		CertFile:        "/etc/loopwise/client.crt",
//		KeyFile:         "/etc/loopwise/client.key",
//		Token:           os.Getenv("LOOPWISE_TOKEN"),
//	})
//	...
//	d, err := client.Decide(ctx, "checkout_upsell", map[string]any{"basket_value": 42.0, "region": "north"}, "customer-17")
//	...
//	_, err = client.LogOutcomes(ctx, []loopwise.Outcome{{UseCase: "checkout_upsell",
//		DecisionID: d.DecisionID, OutcomeID: "order-981", Name: "purchase", Value: 35.7}})
package loopwise
