// Example chat-policy client in Go: records that a group is full, reads the group's state
// back, and asks whether a group creation would be allowed; prints the three answers as one
// JSON object on stdout (proto3 JSON mapping, proto field names). Exits 1 on any RPC error,
// 2 on bad arguments.
//
// Usage: chat-policy-client HOST:PORT [GROUP_ID]
//
// It imports the generated package as "chatpolicy/v1", the protos' go_package; build it as
// examples/clients/README.md shows (GOPATH mode, Debian's Go packages, offline).
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	chatpolicyv1 "chatpolicy/v1"
)

const sdkAppID = 1400000000

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		fmt.Fprintln(os.Stderr, "usage: chat-policy-client HOST:PORT [GROUP_ID]")
		os.Exit(2)
	}
	groupID := "@TGS#go-example"
	if len(os.Args) == 3 {
		groupID = os.Args[2]
	}
	if err := run(os.Args[1], groupID); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

func run(target, groupID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Plaintext, like the service's port. grpc.WithInsecure is what Debian bookworm's
	// grpc-go 1.33 has; from 1.34 on, write
	// grpc.WithTransportCredentials(insecure.NewCredentials()).
	conn, err := grpc.DialContext(ctx, target, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()
	groups := chatpolicyv1.NewGroupStateServiceClient(conn)
	policy := chatpolicyv1.NewCreationPolicyServiceClient(conn)

	recorded, err := groups.RecordGroupFull(ctx, &chatpolicyv1.RecordGroupFullRequest{
		SdkAppId: sdkAppID, GroupId: groupID, EventTime: timestamppb.Now(),
	})
	if err != nil {
		return failed("RecordGroupFull", err)
	}
	read, err := groups.GetGroupState(ctx, &chatpolicyv1.GetGroupStateRequest{
		SdkAppId: sdkAppID, GroupId: groupID,
	})
	if err != nil {
		return failed("GetGroupState", err)
	}
	decided, err := policy.CheckGroupCreation(ctx, &chatpolicyv1.CheckGroupCreationRequest{
		SdkAppId:        sdkAppID,
		OperatorAccount: "alice",
		OwnerAccount:    "alice",
		GroupType:       "Public",
		Name:            "Book club",
		MemberAccounts:  []string{"bob", "carol"},
		OptPlatform:     "Web",
	})
	if err != nil {
		return failed("CheckGroupCreation", err)
	}

	json := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	fmt.Println("{")
	for i, answer := range []struct {
		key     string
		message proto.Message
	}{{"record_group_full", recorded}, {"get_group_state", read}, {"check_group_creation", decided}} {
		text, err := json.Marshal(answer.message)
		if err != nil {
			return err
		}
		separator := ","
		if i == 2 {
			separator = ""
		}
		fmt.Printf("  %q: %s%s\n", answer.key, text, separator)
	}
	fmt.Println("}")
	return nil
}

// failed says which call failed, with its gRPC status code and message.
func failed(method string, err error) error {
	s := status.Convert(err)
	return fmt.Errorf("%s failed: %s: %s", method, s.Code(), s.Message())
}
