// Parity helper for mmtt's METEOR (tests/eval.rs): stems stdin's words, one per line, with the
// Snowball English stemmer inside meteor-1.5.jar, exactly as Meteor's stem module does.
//     java -cp meteor-1.5.jar scripts/MeteorStem.java < words > stems
import java.io.*;

public class MeteorStem {
    public static void main(String[] args) throws Exception {
        org.tartarus.snowball.ext.englishStemmer s = new org.tartarus.snowball.ext.englishStemmer();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, "UTF-8"));
        PrintStream out = new PrintStream(new BufferedOutputStream(System.out), false, "UTF-8");
        String line;
        while ((line = in.readLine()) != null) {
            s.setCurrent(line);
            s.stem();
            out.println(s.getCurrent());
        }
        out.flush();
    }
}
