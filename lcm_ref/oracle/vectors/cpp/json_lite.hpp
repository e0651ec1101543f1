// json_lite.hpp: the smallest JSON reader the golden vectors need (C++17, no dependencies). A real port would use
// its own JSON library; this one keeps the worked example self-contained. Numbers are kept as their text, so the
// caller decides how to parse them (the vectors' floats are strings anyway: hex floats for strtod).
#pragma once
#include <cctype>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace json_lite {

struct Value {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool b = false;
  std::string text;                      // String: the decoded string; Number: the literal
  std::vector<Value> items;              // Array
  std::map<std::string, Value> fields;   // Object

  bool is_null() const { return kind == Null; }
  bool has(const std::string& k) const { return kind == Object && fields.count(k) > 0; }
  const Value& operator[](const std::string& k) const {
    auto it = fields.find(k);
    if (kind != Object || it == fields.end()) throw std::runtime_error("json: no key '" + k + "'");
    return it->second;
  }
  const Value& operator[](size_t i) const { return items.at(i); }
  size_t size() const { return kind == Array ? items.size() : fields.size(); }
  long long as_int() const { return std::stoll(text); }
  const std::string& str() const { return text; }
};

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}
  Value parse() {
    Value v = value();
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("json: " + what + " at offset " + std::to_string(i_));
  }
  void ws() { while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_; }
  bool eat(char c) { ws(); if (i_ < s_.size() && s_[i_] == c) { ++i_; return true; } return false; }
  void expect(char c) { if (!eat(c)) fail(std::string("expected '") + c + "'"); }
  Value value() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end");
    Value v;
    char c = s_[i_];
    if (c == '{') {
      v.kind = Value::Object; ++i_;
      if (eat('}')) return v;
      do { ws(); std::string k = string(); expect(':'); v.fields[k] = value(); } while (eat(','));
      expect('}');
    } else if (c == '[') {
      v.kind = Value::Array; ++i_;
      if (eat(']')) return v;
      do { v.items.push_back(value()); } while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Value::String; v.text = string();
    } else if (s_.compare(i_, 4, "true") == 0) { v.kind = Value::Bool; v.b = true; i_ += 4; }
    else if (s_.compare(i_, 5, "false") == 0) { v.kind = Value::Bool; i_ += 5; }
    else if (s_.compare(i_, 4, "null") == 0) { i_ += 4; }
    else {
      size_t j = i_;
      while (j < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[j])) || std::string("+-.eE").find(s_[j]) != std::string::npos)) ++j;
      if (j == i_) fail("unexpected character");
      v.kind = Value::Number; v.text = s_.substr(i_, j - i_); i_ = j;
    }
    return v;
  }
  std::string string() {
    if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
    std::string out;
    for (++i_; i_ < s_.size() && s_[i_] != '"'; ++i_) {
      if (s_[i_] != '\\') { out += s_[i_]; continue; }
      char e = s_[++i_];
      if (e == 'u') {                      // \uXXXX: kept as UTF-8 (the vectors' comments use a few)
        unsigned cp = std::stoul(s_.substr(i_ + 1, 4), nullptr, 16); i_ += 4;
        if (cp < 0x80) out += char(cp);
        else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
        else { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
      } else {
        out += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : e;
      }
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return out;
  }
};

inline Value parse(const std::string& text) { return Parser(text).parse(); }

}  // namespace json_lite
