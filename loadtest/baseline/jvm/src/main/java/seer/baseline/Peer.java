package seer.baseline;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtSession;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.FileReader;
import java.io.IOException;
import java.io.Reader;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.yaml.snakeyaml.Yaml;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.Pipeline;
import redis.clients.jedis.Response;
import ru.yandex.clickhouse.ClickHouseDataSource;
import ru.yandex.clickhouse.settings.ClickHouseProperties;

/**
 * The JVM peer: seer serve's job as a JVM team would write it, with the
 * same model package, services and topics layout as seer and the Python
 * baseline (loadtest/baseline/service.py), which it follows step by step.
 *
 * <p>Per poll: validate each JSON event against the input schema (invalid
 * ones go to the DLQ topic with a reason header), read features from Redis
 * in one pipelined round trip (Jedis), score the batch in one ONNX Runtime
 * run, produce the predictions asynchronously, insert the log rows into
 * ClickHouse in one batch (the HTTP JDBC driver, which works with 18.16),
 * wait for the produce acks and commit the offsets after both.
 *
 * <p>Configuration comes from the same SEER_* environment variables as
 * seer; SEER_CLICKHOUSE_HTTP_ADDR (default: the host of
 * SEER_CLICKHOUSE_ADDR, port 8123) is the HTTP endpoint.
 */
public final class Peer {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final DateTimeFormatter CH_TIME =
      DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss").withZone(ZoneOffset.UTC);
  private static final String COLUMNS =
      "prediction_id, event_id, entity_id, model, model_version, route, event_time, scored_time,"
          + " event_time_ms, scored_time_ms, input_values, input_strings, input_missing,"
          + " feature_views, feature_age_ms, feature_missing, feature_stale, score, label,"
          + " source_topic, source_partition, source_offset";

  /** One model input: where it comes from and how it is encoded. */
  record Input(String name, String kind, String field, String view, String dtype, Object dflt, List<String> categories) {
    float encode(Object raw) {
      if (raw == null) {
        raw = dflt;
      }
      switch (dtype) {
        case "category": {
          int i = categories.indexOf(String.valueOf(raw));
          if (i < 0) {
            i = categories.indexOf("other");
          }
          return i;
        }
        case "bool":
          return Boolean.TRUE.equals(raw) || "true".equals(raw) || "1".equals(raw) ? 1f : 0f;
        default:
          return raw instanceof Number n ? n.floatValue() : Float.parseFloat(String.valueOf(raw));
      }
    }
  }

  /** One field of the input schema, for validation. */
  record Field(String name, String type, boolean required, Double min, Double max) {}

  private static String env(String name, String dflt) {
    String v = System.getenv(name);
    return v == null || v.isEmpty() ? dflt : v;
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> yaml(Path p) throws IOException {
    try (Reader r = new FileReader(p.toFile(), StandardCharsets.UTF_8)) {
      return new Yaml().load(r);
    }
  }

  private static Double num(Object o) {
    return o == null ? null : ((Number) o).doubleValue();
  }

  /** The reason an event is invalid, or null: what service.py checks. */
  static String validate(List<Field> fields, JsonNode ev) {
    if (!ev.isObject()) {
      return "invalid_json";
    }
    for (Field f : fields) {
      JsonNode v = ev.get(f.name());
      if (v == null || v.isNull()) {
        if (f.required()) {
          return "missing_field";
        }
        continue;
      }
      switch (f.type()) {
        case "number":
        case "integer": {
          if (!v.isNumber()) {
            return "wrong_type";
          }
          double d = v.asDouble();
          if (!Double.isFinite(d)) {
            return "not_finite";
          }
          if (f.type().equals("integer") && d != Math.rint(d)) {
            return "wrong_type";
          }
          if ((f.min() != null && d < f.min()) || (f.max() != null && d > f.max())) {
            return "out_of_bounds";
          }
          break;
        }
        case "string":
          if (!v.isTextual()) {
            return "wrong_type";
          }
          break;
        case "boolean":
          if (!v.isBoolean()) {
            return "wrong_type";
          }
          break;
        default:
          break;
      }
    }
    return null;
  }

  private static Object value(JsonNode n) {
    if (n == null || n.isNull()) {
      return null;
    }
    if (n.isBoolean()) {
      return n.booleanValue();
    }
    if (n.isNumber()) {
      return n.doubleValue();
    }
    return n.asText();
  }

  @SuppressWarnings("unchecked")
  public static void main(String[] args) throws Exception {
    Path root = Path.of(env("SEER_REPO", ".")).toAbsolutePath();
    Path pkg = Path.of(env("SEER_SCORING_PACKAGE", root.resolve("deploy/examples/card-fraud").toString()));
    Map<String, Object> m = yaml(pkg.resolve("model.yaml"));
    Map<String, Object> schema = yaml(root.resolve("schemas/events/card_transactions.v1.yaml"));
    int batch = Integer.parseInt(env("SEER_KAFKA_MAX_POLL_RECORDS", "1000"));
    String brokers = env("SEER_KAFKA_BROKERS", "127.0.0.1:9092");
    String inTopic = env("SEER_KAFKA_INPUT_TOPIC", "card-transactions");
    String outTopic = env("SEER_KAFKA_PREDICTIONS_TOPIC", "card-transactions.predictions");
    String dlqTopic = env("SEER_KAFKA_DLQ_TOPIC", "card-transactions.dlq");
    String db = env("SEER_CLICKHOUSE_DATABASE", "seer");
    String prefix = env("SEER_REDIS_KEY_PREFIX", "seer");
    String[] redisAddr = env("SEER_REDIS_ADDR", "127.0.0.1:6379").split(":");
    String chHost = env("SEER_CLICKHOUSE_ADDR", "127.0.0.1:9000").split(":")[0];
    String chHTTP = env("SEER_CLICKHOUSE_HTTP_ADDR", chHost + ":8123");

    List<Input> inputs = new ArrayList<>();
    List<String> views = new ArrayList<>();
    Map<String, List<String>> feats = new HashMap<>();
    for (Map<String, Object> in : (List<Map<String, Object>>) m.get("inputs")) {
      String[] src = ((String) in.get("source")).split("\\.");
      boolean feature = src[0].equals("feature");
      inputs.add(new Input((String) in.get("name"), src[0], feature ? src[2] : src[1], feature ? src[1] : null,
          (String) in.get("dtype"), in.get("default"), (List<String>) in.get("categories")));
      if (feature) {
        if (!views.contains(src[1])) {
          views.add(src[1]);
        }
        feats.computeIfAbsent(src[1], k -> new ArrayList<>()).add(src[2]);
      }
    }
    List<Field> fields = new ArrayList<>();
    for (Map<String, Object> f : (List<Map<String, Object>>) schema.get("fields")) {
      fields.add(new Field((String) f.get("name"), (String) f.get("type"), Boolean.TRUE.equals(f.get("required")),
          num(f.get("min")), num(f.get("max"))));
    }
    String[] names = inputs.stream().map(Input::name).toArray(String[]::new);
    String[] viewNames = views.toArray(String[]::new);
    String[] blanks = new String[names.length];
    Arrays.fill(blanks, "");
    Map<String, Object> artifact = (Map<String, Object>) m.get("artifact");
    Map<String, Object> out = ((List<Map<String, Object>>) m.get("outputs")).get(0);
    int outIndex = ((Number) out.get("index")).intValue();
    double threshold = m.get("threshold") == null ? 0.5 : ((Number) m.get("threshold")).doubleValue();
    String model = (String) m.get("name");
    String version = String.valueOf(m.get("version"));

    OrtEnvironment ort = OrtEnvironment.getEnvironment();
    OrtSession.SessionOptions so = new OrtSession.SessionOptions();
    so.setIntraOpNumThreads(1);
    OrtSession sess = ort.createSession(pkg.resolve((String) artifact.get("file")).toString(), so);

    Jedis redis = new Jedis(redisAddr[0], Integer.parseInt(redisAddr[1]));
    ClickHouseProperties chProps = new ClickHouseProperties();
    chProps.setCompress(false); // 18.16 answers the driver's compressed requests without a header
    Connection ch = new ClickHouseDataSource("jdbc:clickhouse://" + chHTTP + "/" + db, chProps).getConnection();
    // The version's input names go to model_inputs once, as seer's writer
    // does (migration 0006), not on every log row.
    try (PreparedStatement named = ch.prepareStatement(
        "INSERT INTO " + db + ".model_inputs (model, model_version, input_names, logged_ms) VALUES (?, ?, ?, ?)")) {
      named.setString(1, model);
      named.setString(2, version);
      named.setObject(3, names);
      named.setLong(4, System.currentTimeMillis());
      named.executeUpdate();
    }
    PreparedStatement insert = ch.prepareStatement("INSERT INTO " + db + ".inference_log (" + COLUMNS + ") VALUES ("
        + String.join(", ", Collections.nCopies(COLUMNS.split(",").length, "?")) + ")");

    Properties cp = new Properties();
    cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    cp.put(ConsumerConfig.GROUP_ID_CONFIG, env("SEER_KAFKA_GROUP", "seer-jvm-peer"));
    cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, String.valueOf(batch));
    cp.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, "2000");
    Properties pp = new Properties();
    pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    pp.put(ProducerConfig.LINGER_MS_CONFIG, "2");
    pp.put(ProducerConfig.ACKS_CONFIG, "all");
    pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    KafkaConsumer<byte[], byte[]> consumer =
        new KafkaConsumer<>(cp, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    KafkaProducer<byte[], byte[]> producer =
        new KafkaProducer<>(pp, new ByteArraySerializer(), new ByteArraySerializer());
    consumer.subscribe(Collections.singletonList(inTopic));

    AtomicBoolean stop = new AtomicBoolean();
    CountDownLatch done = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      stop.set(true);
      consumer.wakeup();
      try {
        done.await();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }));
    System.err.println("jvm peer consuming " + inTopic);

    String inputName = (String) artifact.get("input");
    try {
      while (!stop.get()) {
        ConsumerRecords<byte[], byte[]> recs;
        try {
          recs = consumer.poll(Duration.ofMillis(50));
        } catch (WakeupException e) {
          break;
        }
        if (recs.isEmpty()) {
          continue;
        }
        List<ConsumerRecord<byte[], byte[]>> good = new ArrayList<>(recs.count());
        List<JsonNode> events = new ArrayList<>(recs.count());
        List<Future<RecordMetadata>> acks = new ArrayList<>(recs.count());
        for (ConsumerRecord<byte[], byte[]> r : recs) {
          String reason;
          JsonNode ev = null;
          try {
            ev = JSON.readTree(r.value());
            reason = ev == null ? "invalid_json" : validate(fields, ev);
          } catch (IOException e) {
            reason = "invalid_json";
          }
          if (reason != null) {
            ProducerRecord<byte[], byte[]> d = new ProducerRecord<>(dlqTopic, r.key(), r.value());
            d.headers().add("seer-error", reason.getBytes(StandardCharsets.UTF_8));
            acks.add(producer.send(d));
            continue;
          }
          good.add(r);
          events.add(ev);
        }
        int n = good.size();
        if (n > 0) {
          Pipeline pipe = redis.pipelined();
          List<Response<List<String>>> replies = new ArrayList<>(n * views.size());
          String[] entities = new String[n];
          for (int i = 0; i < n; i++) {
            byte[] key = good.get(i).key();
            entities[i] = key != null && key.length > 0
                ? new String(key, StandardCharsets.UTF_8) : events.get(i).path("user_id").asText("");
            for (String v : views) {
              List<String> fs = feats.get(v);
              String[] ask = fs.toArray(new String[fs.size() + 1]);
              ask[fs.size()] = "_ts";
              replies.add(pipe.hmget(prefix + ":" + v + ":" + entities[i], ask));
            }
          }
          pipe.sync();
          long nowMs = System.currentTimeMillis();
          float[] x = new float[n * inputs.size()];
          long[][] ages = new long[n][views.size()];
          int[][] missing = new int[n][views.size()];
          for (int i = 0; i < n; i++) {
            Map<String, Map<String, String>> fv = new HashMap<>();
            for (int j = 0; j < views.size(); j++) {
              List<String> vals = replies.get(i * views.size() + j).get();
              String ts = vals.get(vals.size() - 1);
              missing[i][j] = ts == null ? 1 : 0;
              ages[i][j] = ts == null ? -1 : nowMs - Long.parseLong(ts);
              Map<String, String> f = new HashMap<>();
              List<String> fs = feats.get(views.get(j));
              for (int k = 0; k < fs.size(); k++) {
                f.put(fs.get(k), vals.get(k));
              }
              fv.put(views.get(j), f);
            }
            for (int c = 0; c < inputs.size(); c++) {
              Input in = inputs.get(c);
              Object raw;
              if (in.kind().equals("event")) {
                raw = value(events.get(i).get(in.field()));
              } else {
                String s = fv.get(in.view()).get(in.field());
                raw = s == null ? null : Double.parseDouble(s);
              }
              x[i * inputs.size() + c] = in.encode(raw);
            }
          }
          float[][] probs;
          try (OnnxTensor t = OnnxTensor.createTensor(ort, FloatBuffer.wrap(x), new long[] {n, inputs.size()});
              OrtSession.Result res = sess.run(Map.of(inputName, t))) {
            probs = (float[][]) res.get((String) out.get("tensor")).get().getValue();
          }
          Instant scored = Instant.now();
          String scoredText = scored.toString();
          for (int i = 0; i < n; i++) {
            ConsumerRecord<byte[], byte[]> r = good.get(i);
            JsonNode ev = events.get(i);
            float s = probs[i][outIndex];
            int label = s >= threshold ? 1 : 0;
            String eid = ev.path("event_id").asText("");
            if (eid.isEmpty()) {
              eid = r.topic() + "-" + r.partition() + "-" + r.offset();
            }
            String eventTime = ev.get("event_time").asText();
            Instant et = OffsetDateTime.parse(eventTime).toInstant();
            String entity = r.key() == null ? "" : new String(r.key(), StandardCharsets.UTF_8);
            ObjectNode pred = JSON.createObjectNode();
            pred.put("prediction_id", "j-" + eid).put("event_id", eid).put("entity_id", entity)
                .put("model", model).put("model_version", version).put("route", "production")
                .put("score", s).put("label", label).put("event_time", eventTime).put("scored_time", scoredText);
            acks.add(producer.send(new ProducerRecord<>(outTopic, r.key(), JSON.writeValueAsBytes(pred))));
            double[] values = new double[inputs.size()];
            for (int c = 0; c < values.length; c++) {
              values[c] = x[i * inputs.size() + c];
            }
            int col = 1;
            insert.setString(col++, "j-" + eid);
            insert.setString(col++, eid);
            insert.setString(col++, entity);
            insert.setString(col++, model);
            insert.setString(col++, version);
            insert.setString(col++, "production");
            insert.setString(col++, CH_TIME.format(et));
            insert.setString(col++, CH_TIME.format(scored));
            insert.setLong(col++, et.toEpochMilli());
            insert.setLong(col++, scored.toEpochMilli());
            insert.setObject(col++, values);
            insert.setObject(col++, blanks);
            insert.setObject(col++, new int[names.length]);
            insert.setObject(col++, viewNames);
            insert.setObject(col++, ages[i]);
            insert.setObject(col++, missing[i]);
            insert.setObject(col++, new int[views.size()]);
            insert.setFloat(col++, s);
            insert.setInt(col++, label);
            insert.setString(col++, r.topic());
            insert.setInt(col++, r.partition());
            insert.setLong(col++, r.offset());
            insert.addBatch();
          }
          insert.executeBatch();
        }
        for (Future<RecordMetadata> f : acks) {
          f.get();
        }
        consumer.commitSync();
      }
    } finally {
      consumer.close();
      producer.close();
      insert.close();
      ch.close();
      redis.close();
      sess.close();
      done.countDown();
    }
  }

  private Peer() {}
}
