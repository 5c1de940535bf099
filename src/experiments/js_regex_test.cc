#include "experiments/js_regex.h"

#include "gtest/gtest.h"

namespace capstan::experiments {
namespace {

struct RegexCase {
  const char* pattern;
  const char* subject;
  bool ignore_case;
  bool expected;  // new RegExp(pattern, flags).test(subject) in node; false if it throws
};

// Annex B literals and escapes, patterns JavaScript rejects, named groups,
// classes with escapes, Unicode case folding; expectations printed by node 20.
TEST(JsRegexTest, AgreesWithNode) {
  const RegexCase cases[] = {
      {"a{,2}", "a{,2}", false, true},
      {"a{", "xa{", false, true},
      {"{", "{", false, true},
      {"}", "}", false, true},
      {"\\p{L}", "p{L}", false, true},
      {"\\cJ", "\n", false, true},
      {"(?<n>a)\\k<n>", "aa", false, true},
      {"(?<n>a)\\k<n>", "ab", false, false},
      {"\\k<n>", "k<n>", false, true},
      {"[\\d-z]", "-", false, true},
      {"[\\d-z]", "q", false, false},
      {"[a-\\d]", "-", false, true},
      {"x*+", "x", false, false},
      {"a{1}{2}", "aa", false, false},
      {"a{2,1}", "aa", false, false},
      {"*", "*", false, false},
      {"a**", "a", false, false},
      {"a*?", "a", false, true},
      {"a*??", "a", false, false},
      {"[^]", "\n", false, true},
      {"[]", "a", false, false},
      {"]", "]", false, true},
      {"[[:alpha:]]", ":", false, false},
      {"[[:alpha:]]", "b", false, false},
      {"\\/", "/", false, true},
      {"a/b", "a/b", false, true},
      {"\\8", "8", false, true},
      {"\\01", "\x01", false, true},
      {"(a)\\1", "aa", false, true},
      {"\\1(a)", "a", false, true},
      {"é", "É", true, true},
      {"[à-ÿ]", "É", true, true},
      {"^ÉTÉ$", "été", true, true},
      {"ß", "SS", true, false},
      {"\\u0041", "A", false, true},
      {"\\x41", "A", false, true},
      {"\\u004", "u004", false, true},
      {"\\xg", "xg", false, true},
      {"\\q", "q", false, true},
      {"\\-", "-", false, true},
      {"[\\-]", "-", false, true},
      {"(?:a|b)+$", "abab", false, true},
      {"\\bfoo\\b", "a foo b", false, true},
      {"a$", "a\n", false, false},
      {"^b", "a\nb", false, false},
      {".", "\n", false, false},
      {"(?=a)a", "a", false, true},
      {"(?!b)a", "a", false, true},
      {"\\", "\\", false, false},
      {"(?x)", "x", false, false},
      {"a|*", "a", false, false},
      {"(*)", "", false, false},
      {"ab{2}c", "abbc", false, true},
      {"ab{2,}c", "abbbc", false, true},
  };
  for (const RegexCase& c : cases) {
    std::unique_ptr<JsRegex> regex = JsRegex::Compile(c.pattern, c.ignore_case);
    bool matched = regex != nullptr && regex->Test(c.subject);
    EXPECT_EQ(matched, c.expected)
        << "/" << c.pattern << "/" << (c.ignore_case ? "i" : "") << " on \"" << c.subject << "\"";
  }
}

TEST(JsRegexTest, LookbehindIsRejectedNotMisread) {
  // A documented difference: std::regex has no lookbehind.
  EXPECT_EQ(JsRegex::Compile("(?<=a)b", false), nullptr);
}

TEST(JsRegexTest, OverlongInputsAreRefusedNotOverflowed) {
  EXPECT_EQ(JsRegex::Compile(std::string(JsRegex::kMaxPatternBytes + 1, 'a'), false), nullptr);
  std::unique_ptr<JsRegex> any = JsRegex::Compile(".*", false);
  ASSERT_NE(any, nullptr);
  EXPECT_TRUE(any->Test(std::string(JsRegex::kMaxSubjectBytes, 'a')));
  EXPECT_FALSE(any->Test(std::string(JsRegex::kMaxSubjectBytes + 1, 'a')));
}

TEST(JsLowerCaseTest, FoldsUnicodeLetters) {
  EXPECT_EQ(JsLowerCase("ABC"), "abc");
  EXPECT_EQ(JsLowerCase("\xC3\x89T\xC3\x89"), "\xC3\xA9t\xC3\xA9");  // ÉTÉ -> été
}

}  // namespace
}  // namespace capstan::experiments
