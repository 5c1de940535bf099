#include "experiments/eval_protocol.h"

#include <sstream>

#include "experiments/js_value.h"
#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

struct ProtocolCase {
  const char* request;
  const char* expected;  // printed by @growthbook/growthbook 1.7.0 (reference.cjs)
};

// Forced rules, weighted experiments with meta, numeric hash attributes, cyclic
// and gating prerequisites, query-string and forced variations, unknown
// features and a sticky bucket found through the fallback attribute.
TEST(EvalProtocolTest, AnswersAsTheSdkDoes) {
  const ProtocolCase cases[] = {
      {R"({"op":"feature","context":{"attributes":{"id":"1"},"features":{"f":{"defaultValue":1,"rules":[{"force":2,"id":"r1"}]}}},"feature":"f"})",
       R"({"value":2,"on":true,"off":false,"source":"force","ruleId":"r1"})"},
      {R"({"op":"run","context":{"attributes":{"id":"1"}},"experiment":{"key":"my-test","variations":[0,1]}})",
       R"({"key":"1","featureId":null,"inExperiment":true,"hashUsed":true,"variationId":1,"value":1,"hashAttribute":"id","hashValue":"1","stickyBucketUsed":false,"bucket":0.969})"},
      {R"({"op":"feature","context":{"attributes":{"id":"123"},"features":{"f":{"defaultValue":"a","rules":[{"variations":["a","b","c"],"weights":[0.2,0.3,0.5],"coverage":0.9,"hashVersion":2,"meta":[{"key":"ctl"},{"key":"t1","name":"T1"},{"key":"t2"}],"name":"Exp","phase":"1"}]}}},"feature":"f"})",
       R"({"value":"b","on":true,"off":false,"source":"experiment","ruleId":"","experiment":{"variations":["a","b","c"],"key":"f","coverage":0.9,"weights":[0.2,0.3,0.5],"meta":[{"key":"ctl"},{"key":"t1","name":"T1"},{"key":"t2"}],"name":"Exp","phase":"1","hashVersion":2},"experimentResult":{"key":"t1","featureId":"f","inExperiment":true,"hashUsed":true,"variationId":1,"value":"b","hashAttribute":"id","hashValue":"123","stickyBucketUsed":false,"name":"T1","bucket":0.4564}})"},
      {R"({"op":"feature","context":{"attributes":{"id":123},"features":{"f":{"defaultValue":false,"rules":[{"force":true,"coverage":0.5,"hashAttribute":"id"}]}}},"feature":"f"})",
       R"({"value":false,"on":false,"off":true,"source":"defaultValue","ruleId":""})"},
      {R"({"op":"feature","context":{"attributes":{"id":"u"},"features":{"a":{"defaultValue":1,"rules":[{"parentConditions":[{"id":"b","condition":{"value":true}}],"force":2}]},"b":{"defaultValue":true,"rules":[{"parentConditions":[{"id":"a","condition":{"value":1}}],"force":false}]}}},"feature":"a"})",
       R"({"value":null,"on":false,"off":true,"source":"cyclicPrerequisite","ruleId":""})"},
      {R"({"op":"feature","context":{"attributes":{"id":"u"},"features":{"a":{"defaultValue":1,"rules":[{"parentConditions":[{"id":"b","condition":{"value":true},"gate":true}],"force":2}]},"b":{"defaultValue":false}}},"feature":"a"})",
       R"({"value":null,"on":false,"off":true,"source":"prerequisite","ruleId":""})"},
      {R"({"op":"run","context":{"attributes":{"id":"1"},"url":"http://x/?my-test=0"},"experiment":{"key":"my-test","variations":[0,1]}})",
       R"({"key":"0","featureId":null,"inExperiment":true,"hashUsed":false,"variationId":0,"value":0,"hashAttribute":"id","hashValue":"1","stickyBucketUsed":false})"},
      {R"({"op":"run","context":{"attributes":{"id":"1"},"forcedVariations":{"my-test":1}},"experiment":{"key":"my-test","variations":[0,1],"active":false}})",
       R"({"key":"1","featureId":null,"inExperiment":true,"hashUsed":false,"variationId":1,"value":1,"hashAttribute":"id","hashValue":"1","stickyBucketUsed":false})"},
      {R"({"op":"feature","context":{"attributes":{"id":"u1"}},"feature":"nope"})",
       R"({"value":null,"on":false,"off":true,"source":"unknownFeature","ruleId":""})"},
      {R"({"op":"stickyBucket","context":{"attributes":{"id":"i1","deviceId":"d1"},"features":{"f":{"defaultValue":0,"rules":[{"key":"e","variations":[0,1],"fallbackAttribute":"deviceId","meta":[{"key":"0"},{"key":"1"}],"bucketVersion":1}]}}},"stickyBucketStore":[{"attributeName":"deviceId","attributeValue":"d1","assignments":{"e__1":"1"}}],"feature":"f"})", R"({"experimentResult":{"key":"1","featureId":"f","inExperiment":true,"hashUsed":true,"variationId":1,"value":1,"hashAttribute":"id","hashValue":"i1","stickyBucketUsed":true,"bucket":0.11},"stickyBucketAssignmentDocs":{"deviceId||d1":{"attributeName":"deviceId","attributeValue":"d1","assignments":{"e__1":"1"}},"id||i1":{"attributeName":"id","attributeValue":"i1","assignments":{"e__1":"1"}}}})"},
  };
  for (const ProtocolCase& c : cases) {
    Json answer = Json::parse(HandleEvalRequest(c.request));
    EXPECT_EQ(answer, Json::parse(c.expected)) << c.request;
  }
}

TEST(EvalProtocolTest, CopiesSeqAndAnswersErrors) {
  EXPECT_EQ(Json::parse(HandleEvalRequest(
                R"({"op":"hash","seed":"seed","value":"a","version":2,"seq":17})")),
            Json::parse(R"({"result":0.0505,"seq":17})"));
  Json unknown = Json::parse(HandleEvalRequest(R"({"op":"nope","seq":3})"));
  EXPECT_EQ(unknown["error"], "unknown op: nope");
  EXPECT_EQ(unknown["seq"], 3);
  EXPECT_TRUE(Json::parse(HandleEvalRequest("{not json")).contains("error"));
  EXPECT_TRUE(Json::parse(HandleEvalRequest("[1]")).contains("error"));
  EXPECT_TRUE(Json::parse(HandleEvalRequest(R"({"op":"feature"})")).contains("error"));
}

TEST(EvalProtocolTest, AnswersUrlRedirect) {
  // The protocol's answer shape (the flow itself: url_redirect_test.cc).
  Json answer = Json::parse(HandleEvalRequest(
      R"({"op":"urlRedirect","seq":9,"context":{"attributes":{"id":"7"},
          "url":"https://shop.example.com/landing?utm=mail",
          "experiments":[{"key":"landing","weights":[0.05,0.95],"persistQueryString":true,
            "urlPatterns":[{"type":"simple","pattern":"https://shop.example.com/landing"}],
            "variations":[{},{"urlRedirect":"https://shop.example.com/landing-b"}]}]}})"));
  EXPECT_EQ(answer, Json::parse(R"({"result":[{"inExperiment":true,
      "urlRedirect":"https://shop.example.com/landing-b",
      "urlWithParams":"https://shop.example.com/landing-b?utm=mail"}],"seq":9})"));
  EXPECT_EQ(Json::parse(HandleEvalRequest(R"({"op":"urlRedirect","context":{}})")),
            Json::parse(R"({"result":[]})"));
  EXPECT_TRUE(Json::parse(HandleEvalRequest(R"({"op":"urlRedirect"})")).contains("error"));
  EXPECT_TRUE(
      Json::parse(HandleEvalRequest(R"({"op":"urlRedirect","context":{"experiments":[null]}})"))
          .contains("error"));
}

TEST(EvalProtocolTest, DeepNestingIsAnErrorNotAStackOverflow) {
  std::string deep = R"({"op":"evalCondition","attributes":{},"savedGroups":{},"condition":)";
  for (int i = 0; i < 100000; ++i) deep += R"({"$not":)";
  deep += "{}";
  for (int i = 0; i < 100000; ++i) deep += "}";
  deep += "}";
  EXPECT_TRUE(Json::parse(HandleEvalRequest(deep)).contains("error"));
}

TEST(EvalProtocolTest, LongPrerequisiteChainIsAnError) {
  Json features = Json::object();
  for (int i = 0; i < 1000; ++i) {
    features["f" + std::to_string(i)] =
        Json::parse(R"({"defaultValue":1,"rules":[{"parentConditions":[{"id":"f)" +
                    std::to_string(i + 1) + R"(","condition":{}}],"force":2}]})");
  }
  Json request = {{"op", "feature"}, {"feature", "f0"}, {"context", {{"features", features}}}};
  EXPECT_TRUE(Json::parse(HandleEvalRequest(request.dump())).contains("error"));
}

TEST(EvalProtocolTest, DecryptFailureIsNullNotAnError) {
  EXPECT_EQ(Json::parse(HandleEvalRequest(
                R"({"op":"decrypt","encryptedString":"nodot","key":"AAAAAAAAAAAAAAAAAAAAAA=="})")),
            Json::parse(R"({"result":null})"));
}

TEST(EvalProtocolTest, LoopSkipsBlankLinesAndAnswersInOrder) {
  std::istringstream in(
      "{\"op\":\"getEqualWeights\",\"numVariations\":2,\"seq\":1}\n\n  \n"
      "{\"op\":\"getEqualWeights\",\"numVariations\":0,\"seq\":2}\n");
  std::ostringstream out;
  EXPECT_EQ(RunEvalLoop(in, out), 0);
  EXPECT_EQ(out.str(), "{\"result\":[0.5,0.5],\"seq\":1}\n{\"result\":[],\"seq\":2}\n");
}

}  // namespace
}  // namespace capstan::experiments
