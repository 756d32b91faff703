#include "../../support.h"

#include <qkv/train/io/files.h>

using namespace qkv;

TEST_CASE("printed commands and written text are escaped") {
  CHECK(shell_quote("runs/reverse") == "runs/reverse");
  CHECK(shell_quote("$(touch PWNED)") == "'$(touch PWNED)'");
  CHECK(shell_quote("it's") == "'it'\\''s'");
  CHECK(shell_quote("") == "''");
  CHECK(shell_quote("a b") == "'a b'");
  CHECK(has_control_character("a\rb"));
  CHECK(has_control_character("a\x7f"));
  CHECK(has_control_character(std::string("a\0b", 3)));
  CHECK_FALSE(has_control_character("plain é"));
  CHECK_FALSE(has_control_character("tab\there", "\t"));
  CHECK(xml_escape("<a & \"b\" 'c'>") == "&lt;a &amp; &quot;b&quot; &#39;c&#39;&gt;");
  CHECK(xml_escape("esc\x1b[0m") == "esc\xEF\xBF\xBD[0m");
}
