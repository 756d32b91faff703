#include "../../support.h"

#include <qkv/train/use/attention_view.h>

using namespace qkv;

TEST_CASE("render_attention shades each row") {
  const Tensor w = Tensor::from(std::vector<float>{0, 1, 1, 0}, {2, 2});
  const std::string s = render_attention(w, {"a", "b"});
  CHECK(s.find("a |    @\n") != std::string::npos);
  CHECK(s.find("b |  @  \n") != std::string::npos);
  CHECK_ERROR(render_attention(Tensor::ones({1, 2, 2}), {"a", "b"}), "render_attention: expected (2, 2) weights for 2 "
                                                                     "tokens, got shape [1, 2, 2]");
  // A row of zeros (scores that overflowed to -inf) or NaN is not a distribution: marked.
  const Tensor odd = Tensor::from(std::vector<float>{0, 0, 0.5f, 0.5f, std::nanf(""), 1}, {3, 2});
  CHECK(rows_not_distributions(odd) == std::vector<std::int64_t>{0, 2});
  const std::string m = render_attention(Tensor::from(std::vector<float>{0, 0, 0, 1}, {2, 2}), {"a", "b"});
  const auto mark = m.find("<- does not sum to 1\n");
  CHECK((mark != std::string::npos && m.find("a |") < mark && mark < m.find("b |")));
  CHECK(m.find("b |    @\n") != std::string::npos);
}

TEST_CASE("render_attention: a token of newlines or tabs stays on its line, escaped") {
  const Tensor w = Tensor::from(std::vector<float>{1, 0, 0, 1}, {2, 2});
  const std::string s = render_attention(w, {"\n\n", "a\tb"});
  CHECK(std::count(s.begin(), s.end(), '\n') == 4);  // the key line, two rows, the legend
  CHECK(s.find("\\n\\n |") != std::string::npos);
  CHECK(s.find("a\\tb |") != std::string::npos);
}
