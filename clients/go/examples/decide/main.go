// Command decide is the smallest program over the loopwise Go client: one decision over
// mutual TLS with a token, and its outcome. Its settings come from the LOOPWISE_*
// variables (loopwise.ConfigFromEnv), as for the Python SDK:
//
//	LOOPWISE_DECISION_ADDRESS=loopwise-decision.loopwise.svc:50051 \
//	LOOPWISE_FEEDBACK_ADDRESS=loopwise-feedback.loopwise.svc:50052 \
//	LOOPWISE_TLS_CA_FILE=ca.crt LOOPWISE_TLS_CLIENT_CERT_FILE=client.crt \
//	LOOPWISE_TLS_CLIENT_KEY_FILE=client.key LOOPWISE_TOKEN=lw_... \
//	go run ./examples/decide
package main

import (
	"context"
	"fmt"
	"log"

	"github.com/loopwise/loopwise/clients/go/loopwise"
)

func main() {
	cfg, err := loopwise.ConfigFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	cfg.Defaults = map[string]string{"checkout_upsell": "no_offer"} // if loopwise cannot be reached
	client, err := loopwise.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx := context.Background()
	d, err := client.Decide(ctx, "checkout_upsell", map[string]any{
		"basket_value": 42.0, "visits_30d": 3, "region": "north", "mobile": true,
	}, "customer-17")
	if err != nil {
		log.Fatal(err) // bad input, unknown use case, a token without the scope
	}
	fmt.Println(d.Action, d.Probabilities, d.Fallback)

	result, err := client.LogOutcomes(ctx, []loopwise.Outcome{{
		UseCase: "checkout_upsell", DecisionID: d.DecisionID, OutcomeID: "order-981",
		Name: "purchase", Value: 35.7,
	}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("outcomes stored:", result.Accepted)
}
