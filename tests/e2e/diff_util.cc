#include "diff_util.h"

#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"

namespace capstan::e2e {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

Stubs::Stubs(const std::string& endpoint) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  channel = grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(), args);
  kv = etcdserverpb::KV::NewStub(channel);
  lease = etcdserverpb::Lease::NewStub(channel);
  watch = etcdserverpb::Watch::NewStub(channel);
  maintenance = etcdserverpb::Maintenance::NewStub(channel);
  cluster = etcdserverpb::Cluster::NewStub(channel);
  lock = v3lockpb::Lock::NewStub(channel);
  election = v3electionpb::Election::NewStub(channel);
}

void NormalizeHeaders(Message* msg) {
  if (auto* h = dynamic_cast<etcdserverpb::ResponseHeader*>(msg)) {
    h->clear_cluster_id();
    h->clear_member_id();
    h->clear_raft_term();
    return;
  }
  const auto* refl = msg->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  refl->ListFields(*msg, &fields);
  for (const FieldDescriptor* f : fields) {
    if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < refl->FieldSize(*msg, f); ++i) {
        NormalizeHeaders(refl->MutableRepeatedMessage(msg, f, i));
      }
    } else {
      NormalizeHeaders(refl->MutableMessage(msg, f));
    }
  }
}

std::string StatusText(const grpc::Status& st) {
  if (st.ok()) return "OK";
  return std::to_string(st.error_code()) + ": " + st.error_message();
}

std::string Diff(const Message& a, const Message& b) {
  std::string report;
  google::protobuf::util::MessageDifferencer d;
  d.ReportDifferencesToString(&report);
  if (d.Compare(a, b)) return "";
  std::string ta, tb;
  google::protobuf::TextFormat::PrintToString(a, &ta);
  google::protobuf::TextFormat::PrintToString(b, &tb);
  return report + "\n--- etcd:\n" + ta + "--- capstan:\n" + tb;
}

}  // namespace capstan::e2e
