// Example chat-policy client in TypeScript: records that a group is full, reads the group's
// state back, and asks whether a group creation would be allowed; prints the three answers as
// one JSON object on stdout. Exits 1 on any RPC error, 2 on bad arguments.
//
// Usage: node dist/src/client.js HOST:PORT [GROUP_ID]
//
// @grpc/proto-loader loads generated/proto/*.proto at run time; the types in generated/ (made
// by `scripts/generate-stubs typescript generated`) let tsc check every request and answer.
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType as CreationProto } from "../generated/creation_policy_service";
import type { ProtoGrpcType as StateProto } from "../generated/group_state_service";

// The options proto-loader-gen-types generated the types for: snake_case field names, 64-bit
// integers and enums as strings, absent fields as their defaults.
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};
const PROTO_DIR = path.resolve(__dirname, "..", "..", "generated", "proto");
const SDK_APP_ID = 1400000000;
const DEADLINE_MS = 5000;

type UnaryMethod<Request, Response> = (
  request: Request,
  options: grpc.CallOptions,
  callback: grpc.requestCallback<Response>,
) => grpc.ClientUnaryCall;

// A failed call: the method's name and gRPC's error.
class CallError extends Error {
  constructor(
    readonly method: string,
    readonly error: grpc.ServiceError,
  ) {
    super(`${method} failed: ${grpc.status[error.code]}: ${error.details}`);
  }
}

// One unary call with a deadline, as a promise.
function call<Request, Response>(
  name: string,
  method: UnaryMethod<Request, Response>,
  request: Request,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    method(request, { deadline: Date.now() + DEADLINE_MS }, (error, response) => {
      if (error) reject(new CallError(name, error));
      else if (response === undefined) reject(new Error(`${name}: no response`));
      else resolve(response);
    });
  });
}

async function main(target: string, groupId: string): Promise<void> {
  const load = (file: string) =>
    grpc.loadPackageDefinition(
      protoLoader.loadSync(file, { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] }),
    );
  const state = (load("chatpolicy/v1/group_state_service.proto") as unknown as StateProto)
    .chatpolicy.v1;
  const creation = (load("chatpolicy/v1/creation_policy_service.proto") as unknown as CreationProto)
    .chatpolicy.v1;

  const credentials = grpc.credentials.createInsecure();
  const groups = new state.GroupStateService(target, credentials);
  const policy = new creation.CreationPolicyService(target, credentials);
  try {
    const now = { seconds: Math.floor(Date.now() / 1000), nanos: 0 };
    const recorded = await call("RecordGroupFull", groups.RecordGroupFull.bind(groups), {
      sdk_app_id: SDK_APP_ID,
      group_id: groupId,
      event_time: now,
    });
    const read = await call("GetGroupState", groups.GetGroupState.bind(groups), {
      sdk_app_id: SDK_APP_ID,
      group_id: groupId,
    });
    const decided = await call("CheckGroupCreation", policy.CheckGroupCreation.bind(policy), {
      sdk_app_id: SDK_APP_ID,
      operator_account: "alice",
      owner_account: "alice",
      group_type: "Public",
      name: "Book club",
      member_accounts: ["bob", "carol"],
      opt_platform: "Web",
    });
    const answers = {
      record_group_full: recorded,
      get_group_state: read,
      check_group_creation: decided,
    };
    process.stdout.write(`${JSON.stringify(answers, null, 2)}\n`);
  } finally {
    groups.close();
    policy.close();
  }
}

const [target, groupId = "@TGS#node-example"] = process.argv.slice(2);
if (target === undefined || process.argv.length > 4) {
  process.stderr.write("usage: node dist/src/client.js HOST:PORT [GROUP_ID]\n");
  process.exit(2);
}
main(target, groupId).catch((error: unknown) => {
  process.stderr.write(`client: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
