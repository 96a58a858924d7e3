// Example chat-policy client in C++: records that a group is full, reads the group's state
// back, and asks whether a group creation would be allowed; prints the three answers as one
// JSON object on stdout (proto3 JSON mapping, proto field names). Exits 1 on any RPC error,
// 2 on bad arguments.
//
// Usage: chat-policy-client HOST:PORT [GROUP_ID]
#include <chrono>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include "chatpolicy/v1/creation_policy_service.grpc.pb.h"
#include "chatpolicy/v1/group_state_service.grpc.pb.h"

namespace {

namespace v1 = chatpolicy::v1;
constexpr std::uint64_t kSdkAppId = 1400000000;
constexpr std::chrono::seconds kDeadline{5};

// A context for one call, with a deadline.
std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kDeadline);
  return context;
}

// A message in the proto3 JSON mapping, fields at their defaults included.
std::string Json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
#if GOOGLE_PROTOBUF_VERSION >= 5026000
  options.always_print_fields_with_no_presence = true;
#else
  options.always_print_primitive_fields = true;
#endif
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) {
    return "null";
  }
  return json;
}

// The name of a gRPC status code, as in the gRPC specification.
std::string CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  if (index < 0 || index >= static_cast<int>(std::size(kNames))) {
    return "CODE_" + std::to_string(index);
  }
  return kNames[index];
}

// False, with a line on stderr, when the call failed.
bool Ok(const grpc::Status& status, const char* method) {
  if (status.ok()) return true;
  std::cerr << "client: " << method << " failed: " << CodeName(status.error_code()) << ": "
            << status.error_message() << "\n";
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: chat-policy-client HOST:PORT [GROUP_ID]\n";
    return 2;
  }
  const std::string target = argv[1];
  const std::string group_id = argc == 3 ? argv[2] : "@TGS#cpp-example";

  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto groups = v1::GroupStateService::NewStub(channel);
  auto policy = v1::CreationPolicyService::NewStub(channel);

  v1::RecordGroupFullRequest record;
  record.set_sdk_app_id(kSdkAppId);
  record.set_group_id(group_id);
  *record.mutable_event_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  v1::RecordGroupFullResponse recorded;
  if (!Ok(groups->RecordGroupFull(Context().get(), record, &recorded), "RecordGroupFull")) {
    return 1;
  }

  v1::GetGroupStateRequest get;
  get.set_sdk_app_id(kSdkAppId);
  get.set_group_id(group_id);
  v1::GetGroupStateResponse read;
  if (!Ok(groups->GetGroupState(Context().get(), get, &read), "GetGroupState")) return 1;

  v1::CheckGroupCreationRequest check;
  check.set_sdk_app_id(kSdkAppId);
  check.set_operator_account("alice");
  check.set_owner_account("alice");
  check.set_group_type("Public");
  check.set_name("Book club");
  check.add_member_accounts("bob");
  check.add_member_accounts("carol");
  check.set_opt_platform("Web");
  v1::CheckGroupCreationResponse decided;
  if (!Ok(policy->CheckGroupCreation(Context().get(), check, &decided), "CheckGroupCreation")) {
    return 1;
  }

  std::cout << "{\n  \"record_group_full\": " << Json(recorded)
            << ",\n  \"get_group_state\": " << Json(read)
            << ",\n  \"check_group_creation\": " << Json(decided) << "\n}\n";
  return 0;
}
